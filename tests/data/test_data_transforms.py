"""Clip transforms: one draw per clip, reference equivalence, multi-crop layout, flip label swap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from video_attn.config.schema import Config
from video_attn.data.transforms import (
    ClipTransform,
    MultiScaleCrop,
    Normalize,
    RandomErasing,
    RandomHorizontalFlip,
    RandomResizedCrop,
    SubtractClipMean,
    TenCrop,
    ThreeCrop,
    build_clip_transform,
    frames_to_tensor,
    symmetric_label_map,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def copies(num_frames: int = 4, height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    frame = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.repeat(frame[None], num_frames, axis=0)


def distinct(num_frames: int = 4, height: int = 40, width: int = 56) -> np.ndarray:
    """Frame t is constant t * 40: the temporal order must survive every transform."""
    return (np.arange(num_frames, dtype=np.uint8) * 40)[:, None, None, None].repeat(height, 1).repeat(
        width, 2).repeat(3, 3)


def make_cfg(crop: str, input_size=(32, 32), scale_size=36, **data_kw):
    cfg = Config()
    data = cfg.data
    data.input_size, data.scale_size = list(input_size), scale_size
    for key, value in data_kw.items():
        setattr(data, key, value)
    data.train.crop = data.val.crop = crop
    return data


TRAIN_MODES = ["random_multiscale", "random_resized", "center", "resize"]


@pytest.mark.parametrize("crop", TRAIN_MODES)
def test_same_draw_on_every_frame(crop):
    data = make_cfg(crop, random_erasing=1.0)
    transform = build_clip_transform(data, data.train, train=True)
    for seed in range(8):
        out, _ = transform(copies(seed=seed), 0, np.random.default_rng(seed))
        assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
        for t in range(1, 4):
            torch.testing.assert_close(out[t], out[0], rtol=0, atol=0)


@pytest.mark.parametrize("crop", TRAIN_MODES)
def test_temporal_order_kept_and_deterministic(crop):
    data = make_cfg(crop)
    transform = build_clip_transform(data, data.train, train=True)
    out, _ = transform(distinct(), None, np.random.default_rng(3))
    means = out.mean(dim=(1, 2, 3))
    assert (means[1:] > means[:-1]).all()
    again, _ = transform(distinct(), None, np.random.default_rng(3))
    torch.testing.assert_close(out, again, rtol=0, atol=0)


def test_randomness_comes_from_the_given_generator_only():
    data = make_cfg("random_multiscale", random_erasing=0.5)
    transform = build_clip_transform(data, data.train, train=True)
    torch.manual_seed(5)
    np.random.seed(5)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy())
    a, _ = transform(copies(seed=1), 0, np.random.default_rng(11))
    assert torch.equal(torch.get_rng_state(), states[0])  # global RNGs neither read nor consumed
    assert np.array_equal(np.random.get_state()[1], states[1])
    torch.manual_seed(6)
    np.random.seed(6)
    b, _ = transform(copies(seed=1), 0, np.random.default_rng(11))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_multiscale_crop_boxes_are_tsn_grid():
    op = MultiScaleCrop(224)
    rng = np.random.default_rng(0)
    height, width = 256, 340
    sides = [256, 224, 192, 168]  # int(256 * s) for s in (1, .875, .75, .66), 224 snapped
    quarters = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2),
                (1, 1), (1, 3), (3, 1), (3, 3)]
    seen: dict[tuple[int, int], set] = {}
    for _ in range(3000):
        top, left, crop_h, crop_w = op.params(height, width, rng)
        assert crop_h in sides and crop_w in sides
        assert abs(sides.index(crop_h) - sides.index(crop_w)) <= 1  # max_distort = 1
        h_step, w_step = (height - crop_h) // 4, (width - crop_w) // 4
        assert (top, left) in {(r * h_step, c * w_step) for r, c in quarters}
        seen.setdefault((crop_h, crop_w), set()).add((top, left))
    assert len(seen) == 10  # 4 + 3 + 3 size pairs within one scale step
    assert len(seen[(224, 224)]) == 13  # the 13 fixed positions of more_fix_crop


def test_multiscale_crop_equals_crop_then_resize_reference():
    frames = np.random.default_rng(1).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    op = MultiScaleCrop((24, 32))
    top, left, crop_h, crop_w = op.params(50, 70, np.random.default_rng(9))
    out, _ = op(frames_to_tensor(frames), None, np.random.default_rng(9))
    ref = torch.from_numpy(frames).permute(0, 3, 1, 2)[:, :, top:top + crop_h, left:left + crop_w]
    ref = F.interpolate(ref.float(), size=(24, 32), mode="bilinear", antialias=True, align_corners=False)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 24, 32)
    assert (out.float() - ref.round()).abs().max() <= 1  # uint8 kernel rounds differently by at most 1


def test_random_resized_crop_params_within_bounds():
    op = RandomResizedCrop(32)
    rng = np.random.default_rng(2)
    for _ in range(500):
        top, left, crop_h, crop_w = op.params(40, 90, rng)
        assert 0 <= top and top + crop_h <= 40 and 0 <= left and left + crop_w <= 90
        assert crop_h * crop_w >= 0.08 * 40 * 90 * 0.9


def test_normalize_matches_reference():
    frames = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    out, _ = Normalize(MEAN, STD)(frames_to_tensor(frames), None, None)
    ref = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / \
        torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous()


def test_flip_swaps_paired_labels():
    assert symmetric_label_map({86: 87, 93: 94}) == {86: 87, 87: 86, 93: 94, 94: 93}
    with pytest.raises(ValueError, match="maps 1"):
        symmetric_label_map({1: 2, 3: 1, 2: 5})
    clip = frames_to_tensor(np.random.default_rng(4).integers(0, 256, (2, 6, 9, 3), dtype=np.uint8))
    flip = RandomHorizontalFlip(p=1.0, label_map={86: 87})
    out, label = flip(clip, 86, np.random.default_rng(0))
    assert label == 87 and flip(clip, 87, np.random.default_rng(0))[1] == 86
    assert flip(clip, 5, np.random.default_rng(0))[1] == 5
    torch.testing.assert_close(out, clip.flip(-1), rtol=0, atol=0)
    out, label = RandomHorizontalFlip(p=0.0, label_map={86: 87})(clip, 86, np.random.default_rng(0))
    assert label == 86 and torch.equal(out, clip)


def test_flip_label_map_in_built_transform_agrees_with_pixels():
    data = make_cfg("center", flip_label_map={0: 1})
    transform = build_clip_transform(data, data.train, train=True)
    frames = copies(seed=2)
    no_flip = build_clip_transform(make_cfg("center", flip=False), data.train, train=True)
    plain, _ = no_flip(frames, 0, np.random.default_rng(0))
    labels = set()
    for seed in range(20):
        out, label = transform(frames, 0, np.random.default_rng(seed))
        flipped = torch.equal(out, plain.flip(-1))
        assert flipped != torch.equal(out, plain)
        assert label == (1 if flipped else 0)
        labels.add(label)
    assert labels == {0, 1}


def test_three_crop_covers_long_side():
    frames = distinct(2, 36, 60)
    frames[:, :, :20] += 1  # mark the left third
    out, _ = ThreeCrop(36)(frames_to_tensor(frames), None, None)
    assert out.shape == (3, 2, 3, 36, 36)
    ref = frames_to_tensor(frames)
    torch.testing.assert_close(out[0], ref[..., 0:36], rtol=0, atol=0)
    torch.testing.assert_close(out[1], ref[..., 12:48], rtol=0, atol=0)
    torch.testing.assert_close(out[2], ref[..., 24:60], rtol=0, atol=0)
    tall, _ = ThreeCrop(20)(frames_to_tensor(distinct(1, 50, 20)), None, None)
    assert tall.shape == (3, 1, 3, 20, 20)


def test_ten_crop_corners_centre_and_flips():
    clip = frames_to_tensor(np.random.default_rng(5).integers(0, 256, (2, 30, 40, 3), dtype=np.uint8))
    out, _ = TenCrop(20)(clip, None, None)
    assert out.shape == (10, 2, 3, 20, 20)
    torch.testing.assert_close(out[0], clip[..., :20, :20], rtol=0, atol=0)
    torch.testing.assert_close(out[3], clip[..., 10:, 20:], rtol=0, atol=0)
    torch.testing.assert_close(out[4], clip[..., 5:25, 10:30], rtol=0, atol=0)
    torch.testing.assert_close(out[5:], out[:5].flip(-1), rtol=0, atol=0)


def test_random_erasing_one_box_for_all_frames():
    clip = torch.randn(4, 3, 32, 16) + 5.0  # never 0 before erasing
    clip[1:] = clip[0]
    out, _ = RandomErasing(p=1.0)(clip, None, np.random.default_rng(6))
    erased = out == 0
    assert erased.any() and torch.equal(erased, erased[:1].expand_as(erased))
    rows, cols = erased[0, 0].nonzero(as_tuple=True)
    assert erased[0, :, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
    assert torch.equal(RandomErasing(p=0.0)(clip, None, np.random.default_rng(6))[0], clip)


@pytest.mark.parametrize("crop, shape", [("center", (4, 3, 32, 32)), ("three", (3, 4, 3, 36, 36)),
                                         ("ten", (10, 4, 3, 32, 32)), ("resize", (4, 3, 32, 32))])
def test_eval_transforms_shapes_and_metadata(crop, shape):
    data = make_cfg(crop)
    transform = build_clip_transform(data, data.val, train=False)
    out, label = transform(distinct(4, 40, 64), 3, np.random.default_rng(0))
    assert tuple(out.shape) == shape and label == 3
    assert transform.num_crops == (shape[0] if len(shape) == 5 else 1)
    assert transform.output_size == tuple(shape[-2:])
    again, _ = transform(distinct(4, 40, 64), 3, np.random.default_rng(1))
    torch.testing.assert_close(out, again, rtol=0, atol=0)  # no randomness at eval


@pytest.mark.parametrize("crop, train", [("random_multiscale", True), ("center", False), ("three", False)])
def test_subtract_clip_mean_zero_mean_per_clip_and_channel(crop, train):
    frames = copies(6, 40, 64, seed=1)
    frames[2:, 10:20, 10:20] = 255  # a change over time, kept relative to the rest of the clip
    plain = build_clip_transform(make_cfg(crop), make_cfg(crop).train if train else make_cfg(crop).val, train)
    data = make_cfg(crop, subtract_clip_mean=True)
    centred = build_clip_transform(data, data.train if train else data.val, train)
    assert isinstance(centred.ops[-1], SubtractClipMean)
    out, _ = centred(frames, 0, np.random.default_rng(3))
    ref, _ = plain(frames, 0, np.random.default_rng(3))
    dims = (-4, -2, -1)  # T, H, W of each crop
    torch.testing.assert_close(out.mean(dim=dims), torch.zeros(out.mean(dim=dims).shape), rtol=0, atol=1e-5)
    torch.testing.assert_close(out, ref - ref.mean(dim=dims, keepdim=True))


def test_build_rejects_inconsistent_modes():
    data = make_cfg("random_multiscale")
    with pytest.raises(ValueError, match="training crop"):
        build_clip_transform(data, data.val, train=False)
    data = make_cfg("three")
    with pytest.raises(ValueError, match="multi-crop"):
        build_clip_transform(data, data.train, train=True)
    data = make_cfg("ten", flip_label_map={1: 2})
    with pytest.raises(ValueError, match="flip_label_map"):
        build_clip_transform(data, data.val, train=False)
    data = make_cfg("center", input_size=(64, 64), scale_size=32)
    with pytest.raises(ValueError, match="larger than the frame"):
        build_clip_transform(data, data.val, train=False)(distinct(), None, np.random.default_rng(0))


def test_clip_transform_rejects_bad_frames():
    transform = ClipTransform([Normalize()])
    with pytest.raises(ValueError, match="uint8"):
        transform(np.zeros((2, 8, 8, 3), np.float32), None, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"expected frames of shape \(T, H, W, 3\), got \(8, 8, 3\)"):
        transform(np.zeros((8, 8, 3), np.uint8), None, np.random.default_rng(0))
