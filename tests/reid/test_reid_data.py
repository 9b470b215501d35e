"""ReID data: MARS parsing (real metadata), protocols, cache, tracklet items, bad files, PK sampler,
DukeMTMC-VideoReID / iLIDS-VID / PRID layouts, synthetic dataset format."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader

from video_attn.data.batch_samplers import RandomIdentitySampler, build_identity_sampler
from video_attn.data.build import EpochSeededDataset
from video_attn.data.datasets import mars as mars_mod
from video_attn.data.datasets.dukev import load_dukev_split
from video_attn.data.datasets.ilidsvid import load_ilidsvid_split
from video_attn.data.datasets.mars import load_mars
from video_attn.data.datasets.prid import load_prid_split
from video_attn.data.datasets.reid_build import build_reid_dataset
from video_attn.data.datasets.tracklets import TrackletDataset, TrackletIndex
from video_attn.data.frame_sampling import AllClipsSampler, RandomFramesSampler


# ------------------------------------------------------------------------------------ real MARS metadata
def test_real_mars_metadata_counts(real_mars_root: Path, tmp_path: Path, reid_helpers) -> None:
    MARS_INFO = reid_helpers.mars_info
    m = load_mars(real_mars_root)  # parses, caches under <root>/.video_attn_cache
    assert m.num_skipped == 0
    assert len(m.train) == 8298 and len(m.test) == 12180
    assert len(np.unique(m.train.pids)) == 625
    assert m.train.pids.min() >= 1 and m.train.pids.max() == 1499
    assert set(np.unique(m.train.camids)) == set(range(1, 7))
    assert set(np.unique(m.test.camids)) == set(range(1, 7))
    assert m.test.pids.min() == -1 and (m.test.pids == 0).sum() == 3248 and (m.test.pids == -1).sum() == 870
    assert m.train.num_frames.sum() == 509914 and m.test.num_frames.sum() == 681089
    assert m.test.num_frames.max() == 920
    q = m.query()
    raw_q = scipy.io.loadmat(str(MARS_INFO / "query_IDX.mat"))["query_IDX"].ravel().astype(np.int64)
    assert len(q) == 1980
    np.testing.assert_array_equal(q.rows, raw_q - 1)  # 1-based rows -> 0-based metadata rows
    assert q.pids.min() > 0  # no junk / distractor queries
    g_official, g_torchreid = m.gallery("mars_official"), m.gallery("torchreid")
    assert len(g_official) == 12180
    assert len(g_torchreid) == 9330
    assert not np.isin(g_torchreid.rows, q.rows).any() and (g_torchreid.pids != -1).all()
    # frame paths follow the released folders
    assert str(m.test.frames(0)[0]).endswith("bbox_test/00-1/00-1C1T0001F001.jpg")
    assert str(m.train.frames(0)[0]).endswith("bbox_train/0001/0001C1T0001F001.jpg")
    with pytest.raises(ValueError, match="protocol"):
        m.gallery("market")


def test_mars_cache_is_used_and_invalidated(real_mars_root: Path, monkeypatch) -> None:
    load_mars(real_mars_root)  # reuses the cache written by the test above (or writes it)
    caches = list((real_mars_root / ".video_attn_cache").glob("mars_*.npz"))
    assert len(caches) == 1

    def boom(*args, **kwargs):
        raise AssertionError("parsed again despite a valid cache")

    with monkeypatch.context() as mp:
        mp.setattr(mars_mod, "_parse", boom)
        assert len(load_mars(real_mars_root).test) == 12180
        # a changed info file (size / mtime) invalidates the key: parsing is attempted again
        query = real_mars_root / "info" / "query_IDX.mat"
        st = query.stat()
        os.utime(query, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        with pytest.raises(AssertionError, match="parsed again"):
            load_mars(real_mars_root)
    os.utime(query, ns=(st.st_atime_ns, st.st_mtime_ns))


def _subset_root(h, root: Path, real: Path, train_rows, test_rows, query_rows, size=(8, 4)) -> None:
    """A MARS root holding a subset of the real tracklet rows, renumbered, with generated images."""
    (root / "info").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, var, rows in (
        ("train", "track_train_info", train_rows),
        ("test", "track_test_info", test_rows),
    ):
        tracks = scipy.io.loadmat(str(real / f"tracks_{split}_info.mat"))[var]
        names = h.mars_names(tracks)
        sub, kept = [], []
        for r in rows:
            s, e, pid, cam = (int(v) for v in tracks[r])
            start = len(kept) + 1
            kept.extend(names[s - 1 : e][:5])  # at most 5 frames per tracklet keeps the fixture tiny
            sub.append((start, len(kept), pid, cam))
            for name in names[s - 1 : e][:5]:
                folder = root / f"bbox_{split}" / name.decode()[:4]
                folder.mkdir(parents=True, exist_ok=True)
                img = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / name.decode())
        h.write_names(root / "info" / f"{split}_name.txt", np.asarray(kept))
        scipy.io.savemat(
            str(root / "info" / f"tracks_{split}_info.mat"), {var: np.asarray(sub, dtype=np.int32)}
        )
    positions = [test_rows.index(r) + 1 for r in query_rows]
    scipy.io.savemat(
        str(root / "info" / "query_IDX.mat"), {"query_IDX": np.asarray([positions], dtype=np.uint16)}
    )


@pytest.fixture(scope="module")
def real_subset_root(tmp_path_factory, reid_helpers) -> Path:
    MARS_INFO = reid_helpers.mars_info
    real_test = scipy.io.loadmat(str(MARS_INFO / "tracks_test_info.mat"))["track_test_info"]
    q = scipy.io.loadmat(str(MARS_INFO / "query_IDX.mat"))["query_IDX"].ravel().astype(int) - 1
    query = [int(q[0]), int(q[1])]
    same_pid = [int(r) for r in np.flatnonzero(real_test[:, 2] == real_test[query[0], 2]) if r not in query][
        :2
    ]
    junk = [int(np.flatnonzero(real_test[:, 2] == -1)[0])]
    distractor = [int(np.flatnonzero(real_test[:, 2] == 0)[0])]
    test_rows = sorted(set(query + same_pid + junk + distractor))
    root = tmp_path_factory.mktemp("mars_subset") / "MARS"
    _subset_root(reid_helpers, root, MARS_INFO, list(range(6)), test_rows, query)
    return root


def test_build_reid_dataset_on_real_subset(real_subset_root: Path, reid_helpers) -> None:
    cfg = reid_helpers.tiny_reid_config(real_subset_root)
    train = build_reid_dataset(cfg, "train")
    assert len(train) == 6
    assert train.num_ids == len(np.unique(train.orig_pids))
    assert train.pids.min() == 0 and train.pids.max() == train.num_ids - 1
    item = train[0]
    assert set(item) == {"clip", "pid", "camid", "index", "valid", "num_failed", "path"}
    assert item["path"] == str(train.index.frame_path(0, 0)) == train.paths[0]
    assert item["clip"].shape == (4, 3, 32, 16) and item["clip"].dtype == torch.float32
    assert item["valid"] and item["num_failed"] == 0
    query = build_reid_dataset(cfg, "query")
    assert len(query) == 2 and (query.pids > 0).all()
    q0 = query[0]
    assert q0["clip"].shape == (int(query.num_frames[0]), 3, 32, 16)  # test mode "all"
    cfg.eval.protocol = "mars_official"
    g_official = build_reid_dataset(cfg, "gallery")
    cfg.eval.protocol = "torchreid"
    g_torchreid = build_reid_dataset(cfg, "gallery")
    assert len(g_official) == len(query.index.rows) + len(g_torchreid) + 1  # + the junk tracklet
    assert -1 in g_official.pids and -1 not in g_torchreid.pids
    assert len(g_torchreid.paths) == len(g_torchreid) and g_torchreid.paths[0].endswith(".jpg")
    cfg.eval.test_mode = "dense"
    cfg.model.num_segments = 2
    dense = build_reid_dataset(cfg, "query")
    n = int(dense.num_frames[0])
    clips = -(-n // 2)
    expected = (clips, 2, 3, 32, 16) if clips > 1 else (2, 3, 32, 16)
    assert dense[0]["clip"].shape == expected


def test_mars_inconsistent_row_is_skipped_and_counted(tmp_path: Path, caplog, reid_helpers) -> None:
    mars_names, write_names = reid_helpers.mars_names, reid_helpers.write_names
    root = tmp_path / "MARS"
    (root / "info").mkdir(parents=True)
    train = np.array([[1, 3, 7, 1], [4, 5, 7, 2], [6, 8, 9, 3]], dtype=np.int32)
    test = np.array([[1, 2, 7, 1], [3, 4, 7, 2], [5, 6, -1, 1], [7, 9, 11, 4]], dtype=np.int32)
    tn, sn = mars_names(train), mars_names(test)
    tn[4] = b"0008C2T0001F002.jpg"  # row 1: a frame of another identity
    write_names(root / "info" / "train_name.txt", tn)
    write_names(root / "info" / "test_name.txt", sn)
    scipy.io.savemat(str(root / "info" / "tracks_train_info.mat"), {"track_train_info": train})
    bad_test = test.copy()
    bad_test[3, 1] = 99  # row 3: range past the name list
    scipy.io.savemat(str(root / "info" / "tracks_test_info.mat"), {"track_test_info": bad_test})
    scipy.io.savemat(str(root / "info" / "query_IDX.mat"), {"query_IDX": np.array([[1, 4]], dtype=np.uint16)})
    with caplog.at_level(logging.WARNING):
        m = load_mars(root, use_cache=False)
    assert m.num_skipped == 2
    assert list(m.train.rows) == [0, 2] and list(m.test.rows) == [0, 1, 2]
    assert len(m.query()) == 1  # the query on the broken row is dropped
    assert "row 1" in caplog.text and "row 3" in caplog.text


def test_mars_missing_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "info").mkdir()
    with pytest.raises(FileNotFoundError, match="train_name.txt"):
        load_mars(tmp_path)


# ------------------------------------------------------------------------------- items and bad files
def _index_with_images(tmp_path: Path, lengths=(3, 5, 2), broken: int | None = None) -> TrackletIndex:
    tracklets = []
    for t, n in enumerate(lengths):
        frames = []
        for f in range(n):
            rel = f"t{t}/f{f:03d}.png"
            (tmp_path / f"t{t}").mkdir(exist_ok=True)
            Image.fromarray(np.full((8, 4, 3), 10 * t + f, dtype=np.uint8)).save(tmp_path / rel)
            frames.append(rel)
        tracklets.append(frames)
    if broken is not None:
        (tmp_path / tracklets[broken][1]).write_bytes(b"not an image")
    pids, camids = [3, 4, 3][: len(lengths)], [1, 2, 1][: len(lengths)]
    return TrackletIndex.from_lists(tmp_path, tracklets, pids=pids, camids=camids)


def _raw_transform(frames: np.ndarray, label, rng):
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float(), label


def _jitter_transform(frames: np.ndarray, label, rng):
    """The raw frames plus one random offset per clip (stands in for a random augmentation)."""
    clip, label = _raw_transform(frames, label, rng)
    return clip + float(rng.random()), label


def test_tracklet_dataset_reads_sampled_frames_in_order(tmp_path: Path) -> None:
    index = _index_with_images(tmp_path)
    ds = TrackletDataset(index, AllClipsSampler(2), _raw_transform, input_size=(8, 4))
    item = ds[1]
    # 5 frames in clips of 2: [0,1] [2,3] [4,4] (last padded with the last frame); pixel value = 10 t + f
    values = item["clip"][:, :, 0, 0, 0]
    np.testing.assert_array_equal(values.numpy(), [[10, 11], [12, 13], [14, 14]])
    assert item["pid"] == 4 and item["camid"] == 2 and item["index"] == 1
    assert item["path"] == str(tmp_path / "t1" / "f000.png")


def test_batches_carry_the_reid_metadata(tmp_path: Path) -> None:
    index = _index_with_images(tmp_path, lengths=(3, 5, 2), broken=2)  # both frames of tracklet 2 are read
    ds = TrackletDataset(index, RandomFramesSampler(2), _raw_transform, input_size=(8, 4))
    batch = next(iter(DataLoader(EpochSeededDataset(ds, seed=0), batch_size=3)))
    assert batch["pid"].tolist() == [3, 4, 3] and batch["camid"].tolist() == [1, 2, 1]
    assert batch["index"].tolist() == [0, 1, 2] and batch["valid"].tolist() == [True, True, False]
    assert batch["num_failed"].tolist() == [0, 0, 1]
    assert batch["path"] == [str(tmp_path / f"t{t}" / "f000.png") for t in range(3)]


def test_item_randomness_comes_from_the_given_generator(tmp_path: Path) -> None:
    index = _index_with_images(tmp_path, lengths=(3, 9, 4))
    ds = TrackletDataset(index, RandomFramesSampler(4), _jitter_transform, input_size=(8, 4), seed=2)
    first = ds.load(1, np.random.default_rng(7))["clip"]
    torch.manual_seed(1)  # the global RNGs play no part
    np.random.seed(1)
    torch.testing.assert_close(ds.load(1, np.random.default_rng(7))["clip"], first, rtol=0, atol=0)
    draws = {tuple(ds.load(1, np.random.default_rng(s))["clip"][:, 0, 0, 0].tolist()) for s in range(6)}
    assert len(draws) > 1  # frames and jitter follow the generator
    plain = ds.load(1, np.random.default_rng([2, 1]))["clip"]
    torch.testing.assert_close(ds[1]["clip"], plain, rtol=0, atol=0)  # ds[i]: generator (seed, i)
    seeded = EpochSeededDataset(ds, seed=5)
    in_workers = next(iter(DataLoader(seeded, batch_sampler=[[(3, 0), (3, 1)]], num_workers=2)))["clip"]
    torch.testing.assert_close(in_workers[1], seeded[(3, 1)]["clip"], rtol=0, atol=0)


def test_eval_item_with_bad_frame_is_invalid_zero_clip(tmp_path: Path) -> None:
    index = _index_with_images(tmp_path, broken=1)
    ds = TrackletDataset(index, AllClipsSampler(2), _raw_transform, input_size=(8, 4))
    item = ds[1]
    assert not item["valid"] and item["num_failed"] == 1
    assert item["clip"].shape == (3, 2, 3, 8, 4) and item["clip"].abs().sum() == 0
    assert ds.num_failed == 1
    assert ds[0]["valid"]


def test_train_item_with_bad_frame_is_replaced(tmp_path: Path) -> None:
    index = _index_with_images(tmp_path, broken=1)
    ds = TrackletDataset(index, AllClipsSampler(2), _raw_transform, replace_failed=True, input_size=(8, 4))
    item = ds.load(1, np.random.default_rng(0))
    assert item["valid"] and item["num_failed"] >= 1 and item["index"] != 1
    assert item["pid"] == int(index.pids[item["index"]])
    assert item["path"] == str(index.frame_path(item["index"], 0))
    assert ds.load(1, np.random.default_rng(0))["index"] == item["index"]  # the replacement follows the rng


def test_train_all_broken_raises_clear_error(tmp_path: Path) -> None:
    index = _index_with_images(tmp_path, lengths=(2,), broken=0)
    index = TrackletIndex(index.root, index.frame_paths, [0], [2], [1], [1], [0])
    ds = TrackletDataset(index, AllClipsSampler(2), _raw_transform, replace_failed=True, max_replacements=3)
    with pytest.raises(RuntimeError, match="consecutive tracklets failed"):
        ds[0]


# ------------------------------------------------------------------------------------- PK sampler
def test_identity_sampler_pk_structure_and_determinism() -> None:
    pids = np.array([0] * 7 + [1] * 2 + [2] * 5 + [3] * 4 + [4] * 1 + [5] * 6)
    s = RandomIdentitySampler(pids, batch_size=6, num_instances=2, seed=3)
    s.set_epoch(1)
    order = list(s)
    assert len(order) == len(s) and len(order) % 6 == 0 and len(order) > 0
    for b in range(0, len(order), 6):
        batch_pids = pids[order[b : b + 6]]
        ids, counts = np.unique(batch_pids, return_counts=True)
        assert len(ids) == 3 and (counts == 2).all()
    assert list(s) == order  # deterministic for a given (seed, epoch)
    s.set_epoch(2)
    assert list(s) != order
    # pid 4 has one tracklet: sampled with replacement up to K
    s4 = RandomIdentitySampler(np.array([0, 0, 1]), batch_size=4, num_instances=2, seed=0)
    batch = list(s4)
    assert sorted(np.array([0, 0, 1])[batch].tolist()) == [0, 0, 1, 1] and batch.count(2) == 2


def test_identity_sampler_distributed_disjoint_equal_length() -> None:
    pids = np.repeat(np.arange(20), 4)
    ranks = [RandomIdentitySampler(pids, 8, 4, seed=1, rank=r, world_size=3) for r in range(3)]
    for s in ranks:
        s.set_epoch(5)
    seqs = [list(s) for s in ranks]
    assert len({len(x) for x in seqs}) == 1 and len(seqs[0]) == len(ranks[0])
    flat = [i for x in seqs for i in x]
    assert len(flat) == len(set(flat))  # K=4 tracklets per id, each id used once per epoch: disjoint
    with pytest.raises(ValueError, match="multiple"):
        RandomIdentitySampler(pids, 6, 4)
    with pytest.raises(ValueError, match="identities"):
        RandomIdentitySampler(np.zeros(8, int), 8, 4)
    with pytest.raises(ValueError, match="pids"):
        build_identity_sampler(object(), 8, 4)


# ------------------------------------------------------------------------------------- other datasets
def test_dukev_layout_frame_order_and_camid(tmp_path: Path) -> None:
    for pid, tid, cam, frames in (("0001", "0001", 6, [99, 100, 7]), ("0002", "0003", 2, [5, 6])):
        d = tmp_path / "train" / pid / tid
        d.mkdir(parents=True)
        for f in frames:
            Image.fromarray(np.zeros((4, 2, 3), np.uint8)).save(d / f"{pid}C{cam}F{f:04d}X30823.jpg")
    bad = tmp_path / "train" / "0003" / "0001"
    bad.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 2, 3), np.uint8)).save(bad / "0003C1F0001X00001.jpg")
    Image.fromarray(np.zeros((4, 2, 3), np.uint8)).save(bad / "0003C2F0002X00001.jpg")
    index = load_dukev_split(tmp_path, "train", cache_dir=tmp_path / "cache")
    assert len(index) == 2  # the two-camera tracklet is skipped
    assert [p.name for p in index.frames(0)] == [
        "0001C6F0007X30823.jpg",
        "0001C6F0099X30823.jpg",
        "0001C6F0100X30823.jpg",
    ]
    assert list(index.pids) == [1, 2] and list(index.camids) == [6, 2]
    again = load_dukev_split(tmp_path, "train", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.frame_paths, index.frame_paths)
    with pytest.raises(FileNotFoundError, match="query"):
        load_dukev_split(tmp_path, "query")


def test_ilidsvid_split_layout(tmp_path: Path) -> None:
    persons = [f"person{i:03d}" for i in (1, 2, 5, 9)]
    for cam in ("cam1", "cam2"):
        for p in persons:
            d = tmp_path / "i-LIDS-VID" / "sequences" / cam / p
            d.mkdir(parents=True)
            for f in range(3):
                Image.fromarray(np.zeros((4, 2, 3), np.uint8)).save(d / f"{cam}_{p}_{f:05d}.png")
    (tmp_path / "train-test people splits").mkdir()
    ls_set = np.array([[3, 1, 4, 2], [2, 4, 1, 3]], dtype=np.float64)  # first half = test
    scipy.io.savemat(
        str(tmp_path / "train-test people splits" / "train_test_splits_ilidsvid.mat"), {"ls_set": ls_set}
    )
    train = load_ilidsvid_split(tmp_path, "train", 0)
    assert len(train) == 4 and list(train.pids) == [0, 0, 1, 1] and list(train.camids) == [1, 2, 1, 2]
    assert "person002" in str(train.frames(0)[0]) and "person009" in str(train.frames(2)[0])
    query, gallery = load_ilidsvid_split(tmp_path, "query", 0), load_ilidsvid_split(tmp_path, "gallery", 0)
    assert (query.camids == 1).all() and (gallery.camids == 2).all()
    assert "person001" in str(query.frames(0)[0]) and "person005" in str(query.frames(1)[0])
    with pytest.raises(ValueError, match="split_index"):
        load_ilidsvid_split(tmp_path, "train", 5)


def test_prid_split_layout(tmp_path: Path) -> None:
    for cam in ("cam_a", "cam_b"):
        for p in ("person_0001", "person_0002", "person_0003"):
            d = tmp_path / "prid_2011" / "multi_shot" / cam / p
            d.mkdir(parents=True)
            for f in range(2):
                Image.fromarray(np.zeros((4, 2, 3), np.uint8)).save(d / f"{f:04d}.png")
    splits = [{"train": ["person_0002"], "test": ["person_0001", "person_0003"]}]
    (tmp_path / "splits_prid2011.json").write_text(json.dumps(splits))
    train = load_prid_split(tmp_path, "train")
    assert len(train) == 2 and list(train.camids) == [1, 2] and list(train.pids) == [0, 0]
    gallery = load_prid_split(tmp_path, "gallery")
    assert list(gallery.pids) == [0, 1] and (gallery.camids == 2).all()
    assert "cam_b/person_0003" in str(gallery.frames(1)[0])


# ------------------------------------------------------------------------------------- synthetic data
def test_synthetic_dataset_matches_mars_format(synthetic_root: Path, reid_helpers) -> None:
    MARS_INFO = reid_helpers.mars_info
    real = {
        "tracks_train_info.mat": "track_train_info",
        "tracks_test_info.mat": "track_test_info",
        "query_IDX.mat": "query_IDX",
    }
    for fname, var in real.items():
        ours = scipy.io.loadmat(str(synthetic_root / "info" / fname))[var]
        ref = scipy.io.loadmat(str(MARS_INFO / fname))[var]
        assert (
            ours.dtype == ref.dtype
            and ours.ndim == ref.ndim
            and ours.shape[1:] == ref.shape[1:]
            or (var == "query_IDX" and ours.shape[0] == 1)
        )
    m = load_mars(synthetic_root, use_cache=False)
    assert m.num_skipped == 0
    assert len(np.unique(m.train.pids)) == 5
    assert {0, -1} <= set(m.test.pids.tolist())
    assert len(m.query()) > 0 and len(np.unique(m.test.camids)) > 2
    assert 8 <= m.train.num_frames.min() and m.train.num_frames.max() <= 24
    with Image.open(m.train.frames(0)[0]) as img:
        assert img.size == (32, 64)
    # every query identity has a match in another camera (a valid query under both protocols)
    q = m.query()
    g = m.gallery("torchreid")
    for pid, cam in zip(q.pids, q.camids):
        assert np.any((g.pids == pid) & (g.camids != cam))
    # identities differ in appearance: mean colour of two identities' first frames differ
    a = np.asarray(Image.open(m.train.frames(0)[0]), dtype=np.float32).mean((0, 1))
    other = int(np.flatnonzero(m.train.pids != m.train.pids[0])[0])
    b = np.asarray(Image.open(m.train.frames(other)[0]), dtype=np.float32).mean((0, 1))
    assert np.abs(a - b).max() > 3


def test_multi_crop_transform_is_a_config_error_not_a_bad_file(tmp_path: Path) -> None:
    index = _index_with_images(tmp_path)

    def three_crop(frames, label, rng):
        return torch.zeros(3, len(frames), 3, 8, 4), label

    ds = TrackletDataset(index, AllClipsSampler(2), three_crop, input_size=(8, 4))
    with pytest.raises(ValueError, match="crop: resize"):
        ds[0]
    assert ds.num_failed == 0


def test_build_reid_dataset_bad_config_is_clear(real_subset_root: Path, reid_helpers) -> None:
    cfg = reid_helpers.tiny_reid_config(real_subset_root)
    cfg.data.train.sampler = "tsn"
    with pytest.raises(ValueError, match="consecutive, evenly, random"):
        build_reid_dataset(cfg, "train")
    with pytest.raises(ValueError, match="split 'val'"):
        build_reid_dataset(cfg, "val")
    cfg.data.root = str(real_subset_root / "missing")
    with pytest.raises(FileNotFoundError, match="train_name.txt"):
        build_reid_dataset(cfg, "query")
