"""Tracklet index and dataset for video person ReID (MARS, DukeMTMC-VideoReID, iLIDS-VID, PRID2011).

A :class:`TrackletIndex` holds one split's tracklets the way MARS stores them: one flat array of frame paths
(relative to the dataset root, in temporal order) and per tracklet a ``[start, end)`` range into it plus its
pid and camera id. Parsers build it once and cache it; the dataset never globs per item.

:class:`TrackletDataset` turns row ``i`` into the ReID item of the shared contract::

    {"clip": float32 (T, 3, H, W) or (V, T, 3, H, W), "pid": int, "camid": int, "index": int,
     "valid": bool, "num_failed": int, "path": str (the tracklet's first frame)}

Frames are read with PIL (JPEG / PNG), chosen by a frame sampler (``sampler(num_frames, rng) -> (V, T)``
int64 indices, see ``video_attn.data.frame_sampling``) and transformed with ONE random draw per clip.
:meth:`TrackletDataset.load` draws every random choice (frames, augmentation, replacement tracklet) from the
generator it is given: the loaders hand it one seeded from (seed, epoch, index); plain indexing ``ds[i]``
uses a fixed generator seeded from ``(seed, i)``.
A tracklet with an unreadable frame is logged and counted; in training (``replace_failed=True``) another
random tracklet is loaded instead (``num_failed`` = failures before success); in evaluation the item is a
zero clip with ``valid=False`` so the evaluator can exclude and report it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..decoders.base import DecodeError, VideoReader
from ..frame_sampling import FrameSampler
from ..transforms import ClipTransform

logger = logging.getLogger(__name__)


@dataclass
class TrackletIndex:
    """One split's tracklets: flat frame paths (bytes, relative to ``root``) + per-tracklet ranges and ids.

    ``starts`` / ``ends`` are 0-based, ``ends`` exclusive. ``rows`` are the tracklets' row numbers in the
    dataset's own metadata (e.g. the 0-based row of ``tracks_test_info.mat``), for messages and for mapping
    back to official files.
    """

    root: Path
    frame_paths: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    rows: np.ndarray

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.starts = np.asarray(self.starts, dtype=np.int64)
        self.ends = np.asarray(self.ends, dtype=np.int64)
        self.pids = np.asarray(self.pids, dtype=np.int64)
        self.camids = np.asarray(self.camids, dtype=np.int64)
        self.rows = np.asarray(self.rows, dtype=np.int64)
        n = len(self.starts)
        if not all(len(a) == n for a in (self.ends, self.pids, self.camids, self.rows)):
            raise ValueError("TrackletIndex arrays must all have one entry per tracklet")
        out_of_range = n and (self.starts.min() < 0 or self.ends.max() > len(self.frame_paths))
        if n and (np.any(self.ends <= self.starts) or out_of_range):
            raise ValueError("TrackletIndex has an empty or out-of-range [start, end) frame range")

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def num_frames(self) -> np.ndarray:
        return self.ends - self.starts

    def frame_path(self, tracklet: int, frame: int) -> Path:
        return self.root / self.frame_paths[self.starts[tracklet] + frame].decode()

    def frames(self, tracklet: int) -> list[Path]:
        return [self.root / p.decode() for p in self.frame_paths[self.starts[tracklet] : self.ends[tracklet]]]

    def select(self, mask_or_rows: np.ndarray) -> TrackletIndex:
        """Sub-index of the chosen tracklets (a boolean mask or positions); frame paths are shared."""
        sel = np.asarray(mask_or_rows)
        return TrackletIndex(
            self.root, self.frame_paths, self.starts[sel], self.ends[sel], self.pids[sel], self.camids[sel],
            self.rows[sel],
        )

    @classmethod
    def from_lists(
        cls, root: Path, tracklets: Sequence[Sequence[str]], pids: Sequence[int], camids: Sequence[int],
        rows: Sequence[int] | None = None,
    ) -> TrackletIndex:
        """Build from one list of relative frame paths per tracklet."""
        lengths = np.array([len(t) for t in tracklets], dtype=np.int64)
        ends = np.cumsum(lengths)
        flat = [p for t in tracklets for p in t]
        paths = np.array([p.encode() for p in flat], dtype="S") if flat else np.zeros(0, dtype="S1")
        return cls(
            root, paths, ends - lengths, ends, np.asarray(pids), np.asarray(camids),
            np.arange(len(tracklets)) if rows is None else np.asarray(rows),
        )


def cache_dirs(root: Path, cache_dir: str | Path | None = None) -> list[Path]:
    """Where parsed metadata caches go, in order of preference: ``cache_dir``, ``<root>/.video_attn_cache``,
    ``$XDG_CACHE_HOME/video_attn`` (``~/.cache/video_attn``)."""
    dirs = [Path(root) / ".video_attn_cache"]
    if cache_dir is not None:
        dirs.insert(0, Path(cache_dir))
    dirs.append(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "video_attn")
    return dirs


def load_cached_arrays(root: Path, cache_dir: str | Path | None, fname: str) -> dict[str, np.ndarray] | None:
    """The arrays of cache file ``fname`` from the first cache dir holding a readable copy, else None."""
    for d in cache_dirs(root, cache_dir):
        if (d / fname).is_file():
            try:
                with np.load(d / fname, allow_pickle=False) as npz:
                    return {k: npz[k] for k in npz.files}
            except (OSError, ValueError) as exc:
                logger.warning("ignoring unreadable cache %s: %s", d / fname, exc)
    return None


def save_cached_arrays(
    root: Path, cache_dir: str | Path | None, fname: str, arrays: dict[str, np.ndarray]
) -> None:
    """Write ``arrays`` atomically (temp file + rename) to the first writable cache dir."""
    for d in cache_dirs(root, cache_dir):
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp.npz")
            os.close(fd)
            np.savez(tmp, **arrays)
            os.replace(tmp, d / fname)
            return
        except OSError as exc:
            logger.debug("cannot write cache in %s: %s", d, exc)
    logger.warning("no writable cache dir for %s; metadata will be parsed again next time", fname)


def read_image_frames(paths: Sequence[Path]) -> np.ndarray:
    """Read RGB frames with PIL into uint8 ``(T, H, W, 3)``; other-sized frames are resized to the first."""
    frames = []
    size = None
    for path in paths:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is None:
                size = img.size
            elif img.size != size:
                img = img.resize(size, Image.BILINEAR)
            frames.append(np.asarray(img, dtype=np.uint8))
    return np.stack(frames)


class ImageListReader(VideoReader):
    """A tracklet given as image files in temporal order, as a :class:`VideoReader` (for the inference API).

    Frames are read as :class:`TrackletDataset` reads them (:func:`read_image_frames`: the distinct wanted
    frames of one call, those of another size resized to the first), so the same sampler and transform give
    the same clip.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], fps: float = 0.0) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise DecodeError("a tracklet needs at least one frame image")
        self.path = str(self.paths[0])
        self.num_frames = len(self.paths)
        self.fps = float(fps)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            frames = read_image_frames([self.paths[u] for u in unique])
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for missing and corrupt images
            raise DecodeError(f"{self.path}: cannot read the tracklet's frames: {exc}") from None
        return frames[inverse.reshape(-1)]


class TrackletDataset(Dataset):
    """ReID tracklets as contract items (see the module docstring).

    Args:
        index: the split's tracklets.
        sampler: frame sampler ``(num_frames, rng) -> (V, T)`` indices.
        transform: clip transform ``(frames uint8 (T, H, W, 3), label, rng) -> (tensor (T, 3, H, W), label)``.
        labels: per-tracklet ``pid`` reported in items (training: contiguous 0..num_ids-1); default the
            index's pids.
        replace_failed: training behaviour for unreadable tracklets (replace by another random one).
        input_size: (H, W) of the transformed frames, for the zero clip of a failed eval item.
        max_replacements: consecutive failures after which training stops with an error (a broken dataset).
        seed: seed of the generator of plain indexing ``ds[i]`` (loaders hand :meth:`load` their own).
    """

    def __init__(
        self,
        index: TrackletIndex,
        sampler: FrameSampler,
        transform: ClipTransform,
        labels: np.ndarray | None = None,
        replace_failed: bool = False,
        input_size: Sequence[int] = (256, 128),
        max_replacements: int = 50,
        seed: int = 0,
    ) -> None:
        self.index = index
        self.sampler = sampler
        self.transform = transform
        self.labels = np.asarray(index.pids if labels is None else labels, dtype=np.int64)
        self.orig_pids = index.pids  # the dataset's own pids (labels may be relabelled 0..K-1)
        if len(self.labels) != len(index):
            raise ValueError("labels must have one entry per tracklet")
        self.replace_failed = replace_failed
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.max_replacements = max_replacements
        self.seed = seed
        self.num_failed = 0  # failures seen by this process (workers keep their own count)

    def __len__(self) -> int:
        return len(self.index)

    # metadata the engine / feature extraction use
    @property
    def pids(self) -> np.ndarray:
        return self.labels

    @property
    def camids(self) -> np.ndarray:
        return self.index.camids

    @property
    def num_frames(self) -> np.ndarray:
        return self.index.num_frames

    @property
    def paths(self) -> list[str]:
        return [str(self.index.frame_path(i, 0)) for i in range(len(self.index))]

    @property
    def num_ids(self) -> int:
        return int(len(np.unique(self.labels)))

    def _read(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
        """Sampled frames ``(V * T, H, W, 3)`` of tracklet ``i`` and the sample grid shape (V, T)."""
        n = int(self.index.num_frames[i])
        idx = np.asarray(self.sampler(n, rng), dtype=np.int64)
        if idx.ndim != 2 or idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise RuntimeError(f"frame sampler returned invalid indices of shape {idx.shape} for {n} frames")
        unique, inverse = np.unique(idx, return_inverse=True)
        start = self.index.starts[i]
        paths = [self.index.root / self.index.frame_paths[start + u].decode() for u in unique]
        return read_image_frames(paths)[inverse.reshape(-1)], idx.shape

    def _transform(
        self, i: int, frames: np.ndarray, grid: tuple[int, int], rng: np.random.Generator
    ) -> torch.Tensor:
        clip, _ = self.transform(frames, int(self.labels[i]), rng)
        if clip.dim() != 4:
            raise ValueError(
                f"ReID clips need a single-view transform (T, 3, H, W); got {tuple(clip.shape)} "
                "(use data.<split>.crop: resize)"
            )
        views, length = grid
        return clip.reshape(views, length, *clip.shape[1:]) if views > 1 else clip

    def _zero_clip(self, i: int) -> torch.Tensor:
        idx = np.asarray(self.sampler(int(self.index.num_frames[i]), np.random.default_rng(0)))
        views, length = idx.shape
        shape = (length, 3, *self.input_size) if views == 1 else (views, length, 3, *self.input_size)
        return torch.zeros(shape, dtype=torch.float32)

    def _item(self, i: int, clip: torch.Tensor, valid: bool, num_failed: int) -> dict:
        return {
            "clip": clip,
            "pid": int(self.labels[i]),
            "camid": int(self.index.camids[i]),
            "index": int(i),
            "valid": valid,
            "num_failed": num_failed,
            "path": str(self.index.frame_path(i, 0)),
        }

    def __getitem__(self, i: int) -> dict:
        return self.load(i, np.random.default_rng([self.seed, int(i)]))

    def load(self, i: int, rng: np.random.Generator) -> dict:
        """The item of tracklet ``i``, every random choice drawn from ``rng`` (see the module docstring)."""
        i = int(i)
        failed = 0
        while True:
            try:
                frames, grid = self._read(i, rng)
            except (OSError, ValueError, SyntaxError) as exc:
                # PIL: OSError (missing, truncated, unidentified), SyntaxError / ValueError (corrupt headers)
                failed += 1
                self.num_failed += 1
                logger.warning(
                    "tracklet %d (metadata row %d, first frame %s) unreadable: %s",
                    i, int(self.index.rows[i]), self.index.frame_path(i, 0), exc,
                )
                if not self.replace_failed:
                    return self._item(i, self._zero_clip(i), False, failed)
                if failed >= self.max_replacements:
                    raise RuntimeError(
                        f"{failed} consecutive tracklets failed to load (last: "
                        f"{self.index.frame_path(i, 0)}); check the dataset root and files"
                    ) from exc
                i = int(rng.integers(len(self)))
                continue
            return self._item(i, self._transform(i, frames, grid, rng), True, failed)
