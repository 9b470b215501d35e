"""Frame samplers: index properties, official formulas, determinism, wrap-around, cyclic repeat."""

from __future__ import annotations

import numpy as np
import pytest

from video_attn.config.schema import Config
from video_attn.data.frame_sampling import (
    AllClipsSampler,
    AllFramesSampler,
    ConsecutiveSampler,
    DenseSampler,
    EvenlySampler,
    RandomFramesSampler,
    SegmentSampler,
    build_frame_sampler,
)

LENGTHS = [1, 3, 7, 8, 9, 64, 65, 301]

SAMPLERS = [
    SegmentSampler(8, "random"), SegmentSampler(8, "center"), SegmentSampler(8, "uniform", num_clips=3),
    SegmentSampler(8, "random", num_clips=2), DenseSampler(8, 8, "random"), DenseSampler(4, 4, "uniform", 10),
    ConsecutiveSampler(16, "random"), ConsecutiveSampler(16, "start"), EvenlySampler(8, "center"),
    EvenlySampler(8, "random"), RandomFramesSampler(6), RandomFramesSampler(6, num_clips=2),
]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_contract_shape_dtype_range_and_determinism(sampler):
    for n in LENGTHS:
        out = sampler(n, np.random.default_rng(7))
        assert out.dtype == np.int64 and out.shape == (sampler.num_views, sampler.clip_len)
        assert out.min() >= 0 and out.max() < n
        np.testing.assert_array_equal(out, sampler(n, np.random.default_rng(7)))
    with pytest.raises(ValueError, match="0 frames"):
        sampler(0, np.random.default_rng(0))


def test_segment_random_is_tsn_formula():
    rng = np.random.default_rng(0)
    for n in (8, 20, 99):
        seg = n // 8
        draws = np.stack([SegmentSampler(8, "random")(n, rng)[0] for _ in range(300)])
        starts = np.arange(8) * seg
        assert ((draws >= starts) & (draws < starts + seg)).all()  # one frame inside each segment
        if seg > 1:
            assert all(len(np.unique(draws[:, i])) == seg for i in range(8))  # the whole segment is used
    # shorter than the clip: indices spread over the video instead of TSM's all-zeros
    np.testing.assert_array_equal(SegmentSampler(8)(4, rng)[0], [0, 0, 1, 1, 2, 2, 3, 3])


def test_segment_center_and_uniform_k():
    n = 100
    expected = [int(n / 8 / 2 + n / 8 * i) for i in range(8)]  # TSM's _get_val_indices
    np.testing.assert_array_equal(SegmentSampler(8, "center")(n, None)[0], expected)
    np.testing.assert_array_equal(SegmentSampler(8, "uniform", 1)(n, None)[0], expected)
    grids = SegmentSampler(8, "uniform", 4)(n, None)
    tick = n / 8
    for j in range(4):
        np.testing.assert_array_equal(grids[j], [int(tick * (i + (j + 0.5) / 4)) for i in range(8)])
    assert len({tuple(g) for g in grids}) == 4  # shifted grids differ
    with pytest.raises(ValueError, match="uniform"):
        SegmentSampler(8, "center", num_clips=2)


def test_dense_window_stride_and_wrap():
    sampler = DenseSampler(8, 8, "random")
    rng = np.random.default_rng(1)
    starts = set()
    for _ in range(200):
        idx = sampler(100, rng)[0]
        np.testing.assert_array_equal(np.diff(idx), 8)
        starts.add(int(idx[0]))
    assert min(starts) >= 0 and max(starts) <= 100 - 64 and len(starts) > 20
    # shorter than the 64-frame window: start 0, indices modulo n
    np.testing.assert_array_equal(sampler(20, rng)[0], np.arange(0, 64, 8) % 20)
    test = DenseSampler(8, 8, "uniform", num_clips=10)(300, None)
    np.testing.assert_array_equal(test[:, 0], np.linspace(0, 300 - 64, 10).astype(int))
    np.testing.assert_array_equal(test - test[:, :1], np.tile(np.arange(0, 64, 8), (10, 1)))


def test_consecutive_and_cyclic_repeat():
    rng = np.random.default_rng(2)
    for _ in range(50):
        idx = ConsecutiveSampler(16, "random")(40, rng)[0]
        np.testing.assert_array_equal(np.diff(idx), 1)
        assert 0 <= idx[0] <= 24
    np.testing.assert_array_equal(ConsecutiveSampler(16, "start")(40, rng)[0], np.arange(16))
    np.testing.assert_array_equal(ConsecutiveSampler(8, "random")(3, rng)[0], [0, 1, 2, 0, 1, 2, 0, 1])


def test_evenly_sampler():
    np.testing.assert_array_equal(EvenlySampler(4, "center")(20, None)[0], [2, 7, 12, 17])
    rng = np.random.default_rng(3)
    for _ in range(50):
        idx = EvenlySampler(4, "random")(21, rng)[0]
        bounds = np.arange(5) * 21 // 4
        assert ((idx >= bounds[:-1]) & (idx < bounds[1:])).all()
    # short tracklet: all frames then the last one repeated (torchreid)
    np.testing.assert_array_equal(EvenlySampler(6, "center")(4, None)[0], [0, 1, 2, 3, 3, 3])


def test_random_frames_sorted_distinct_and_short():
    rng = np.random.default_rng(4)
    idx = RandomFramesSampler(8)(30, rng)[0]
    assert (np.diff(idx) > 0).all()
    short = RandomFramesSampler(8)(5, rng)[0]
    assert (np.diff(short) >= 0).all() and set(short.tolist()) == set(range(5))


def test_all_frames():
    out = AllFramesSampler()(13, np.random.default_rng(0))
    np.testing.assert_array_equal(out, np.arange(13)[None])


def test_all_clips_cover_the_video_and_pad_with_the_last_frame():
    sampler = AllClipsSampler(4)
    np.testing.assert_array_equal(sampler(10, np.random.default_rng(0)),
                                  [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]])
    np.testing.assert_array_equal(sampler(8, np.random.default_rng(0)), [[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(sampler(1, np.random.default_rng(0)), [[0, 0, 0, 0]])
    with pytest.raises(ValueError, match="0 frames"):
        sampler(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="clip_len must be a positive integer, got 0"):
        AllClipsSampler(0)


def test_seed_changes_draws():
    a = SegmentSampler(8)(200, np.random.default_rng(0))
    b = SegmentSampler(8)(200, np.random.default_rng(1))
    assert not np.array_equal(a, b)


def test_build_frame_sampler_maps_config():
    data = Config().data
    split = data.val
    split.sampler, split.num_clips = "tsn", 1
    s = build_frame_sampler(split, data, 8, train=False)
    assert isinstance(s, SegmentSampler) and s.mode == "center"
    split.num_clips = 2
    assert build_frame_sampler(split, data, 8, train=False).mode == "uniform"
    split.sampler, split.num_clips = "dense", 10
    data.frame_interval = 4
    s = build_frame_sampler(split, data, 16, train=False)
    assert isinstance(s, DenseSampler)
    assert (s.clip_len, s.frame_interval, s.mode, s.num_views) == (16, 4, "uniform", 10)
    train = data.train
    train.sampler = "consecutive"
    assert build_frame_sampler(train, data, 16, train=True).mode == "random"
    split.sampler, split.num_clips = "consecutive", 1
    assert build_frame_sampler(split, data, 16, train=False).mode == "start"
    split.sampler = "evenly"
    assert build_frame_sampler(split, data, 4, train=False).mode == "center"
    split.sampler = "all"
    assert isinstance(build_frame_sampler(split, data, 4, train=False), AllFramesSampler)
    split.sampler = "random"
    assert isinstance(build_frame_sampler(split, data, 4, train=True), RandomFramesSampler)
    split.sampler = "bogus"
    with pytest.raises(ValueError, match=r"sampler 'bogus' \(data.<split>.sampler\); valid: tsn, dense"):
        build_frame_sampler(split, data, 4, train=False)
    with pytest.raises(ValueError, match="positive"):
        SegmentSampler(0)
    with pytest.raises(ValueError, match="mode"):
        DenseSampler(8, 8, "center")
