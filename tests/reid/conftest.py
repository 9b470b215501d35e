"""Fixtures for the ReID tests: the real MARS metadata with generated name lists, a tiny synthetic dataset,
tiny model configs."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io

from video_attn.config.schema import Config

# The real MARS metadata lives in the shared/ folder next to the checkout (CI clones with shared/ beside it).
_SHARED_CANDIDATES = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "mars_info",
    Path("/work/shared/data/mars_info"),
)
MARS_INFO = next((p for p in _SHARED_CANDIDATES if p.is_dir()), _SHARED_CANDIDATES[0])


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(N,) non-negative ints -> (N, width) ASCII digit bytes."""
    powers = 10 ** np.arange(width - 1, -1, -1)
    return (values[:, None] // powers % 10 + ord("0")).astype(np.uint8)


def mars_names(tracks: np.ndarray) -> np.ndarray:
    """Frame names consistent with MARS info rows [start, end, pid, camid] (vectorised: ~1.2M names fast).

    The tracklet number is the row's rank among the rows of its (pid, camera); frames are numbered from 1.
    """
    tracks = tracks.astype(np.int64)
    lengths = tracks[:, 1] - tracks[:, 0] + 1
    key = (tracks[:, 2] + 1) * 10 + tracks[:, 3]
    order = np.argsort(key, kind="stable")
    tid = np.empty(len(tracks), dtype=np.int64)
    sorted_key = key[order]
    first = np.concatenate([[0], np.flatnonzero(np.diff(sorted_key)) + 1])
    run_start = np.repeat(first, np.diff(np.concatenate([first, [len(order)]])))
    tid[order] = np.arange(len(order)) - run_start + 1
    row = np.repeat(np.arange(len(tracks)), lengths)
    frame = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
    pid = tracks[row, 2]
    pid_bytes = _digits(np.maximum(pid, 0), 4)
    pid_bytes[pid == -1] = np.frombuffer(b"00-1", dtype=np.uint8)
    n = len(row)
    cols = [
        pid_bytes,
        np.full((n, 1), ord("C"), np.uint8),
        _digits(tracks[row, 3], 1),
        np.full((n, 1), ord("T"), np.uint8),
        _digits(tid[row], 4),
        np.full((n, 1), ord("F"), np.uint8),
        _digits(frame, 3),
        np.broadcast_to(np.frombuffer(b".jpg", dtype=np.uint8), (n, 4)),
    ]
    out = np.ascontiguousarray(np.concatenate(cols, axis=1))
    return out.view("S19").reshape(-1)


def write_names(path: Path, names: np.ndarray) -> None:
    path.write_bytes(b"\n".join(names.tolist()) + b"\n")


@pytest.fixture(scope="session")
def real_mars_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MARS root with the REAL info .mat files and name lists generated consistently with them."""
    if not MARS_INFO.is_dir():
        pytest.fail(f"real MARS metadata not found at {MARS_INFO}")
    root = tmp_path_factory.mktemp("mars_real") / "MARS"
    (root / "info").mkdir(parents=True)
    for name in ("tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat"):
        shutil.copy(MARS_INFO / name, root / "info" / name)
    for split, var in (("train", "track_train_info"), ("test", "track_test_info")):
        tracks = scipy.io.loadmat(str(MARS_INFO / f"tracks_{split}_info.mat"))[var]
        write_names(root / "info" / f"{split}_name.txt", mars_names(tracks))
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from video_attn.data.synthetic.reid import make_reid_dataset

    root = tmp_path_factory.mktemp("synthetic_reid")
    make_reid_dataset(root, seed=0, num_train_ids=5, num_test_ids=4)
    return root


# small temporal modules per ReID arch (model.temporal_kwargs) for the tiny configs
TINY_TEMPORAL_KWARGS: dict[str, dict] = {
    "gltr": {"embed_dim": 16},
    "temporal_pool": {},
    "temporal_attention": {"spatial_kernel": [2, 1]},
    "gru": {"hidden_dim": 16},
}


def tiny_reid_config(root: Path | str = "data", **model_overrides) -> Config:
    """A Config with a tiny ResNet-18 (base_width 8) on 32x16 frames: GLTR unless ``arch`` is overridden,
    with the arch's small temporal module of :data:`TINY_TEMPORAL_KWARGS`."""
    cfg = Config()
    cfg.task = "reid"
    cfg.data.format = "mars"
    cfg.data.root = str(root)
    cfg.data.input_size = [32, 16]
    cfg.data.flip = False
    cfg.data.train.sampler = "consecutive"
    cfg.data.train.crop = "resize"
    cfg.data.test.crop = "resize"
    cfg.model.arch = "gltr"
    cfg.model.num_classes = 5
    cfg.model.num_segments = 4
    cfg.model.backbone.depth = 18
    cfg.model.backbone.base_width = 8
    cfg.model.backbone.last_stride = 1
    for key, value in model_overrides.items():
        setattr(cfg.model, key, value)
    if "temporal_kwargs" not in model_overrides:
        cfg.model.temporal_kwargs = dict(TINY_TEMPORAL_KWARGS[cfg.model.arch])
    return cfg


@pytest.fixture(scope="session")
def reid_helpers() -> SimpleNamespace:
    """The helpers above for test modules (conftest is not importable under --import-mode=importlib)."""
    return SimpleNamespace(
        mars_info=MARS_INFO,
        mars_names=mars_names,
        write_names=write_names,
        tiny_reid_config=tiny_reid_config,
        tiny_temporal_kwargs=TINY_TEMPORAL_KWARGS,
    )
