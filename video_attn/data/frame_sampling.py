"""Frame samplers: which frame indices of an ``n``-frame video make up the clip(s) of one item.

Every sampler is a callable ``sampler(num_frames, rng) -> np.ndarray`` of dtype int64 and shape
``(num_views, clip_len)`` with every index in ``[0, num_frames)``. Randomness comes only from ``rng`` (a
``np.random.Generator``), so a seeded generator gives the same indices on every run and in every worker.

- :class:`SegmentSampler`: TSN (Wang et al., ECCV'16) segments, as in the TSN / TSM / TANet data loaders.
- :class:`DenseSampler`: frames at a fixed stride inside a window (I3D / SlowFast / TANet-Kinetics).
- :class:`ConsecutiveSampler`, :class:`EvenlySampler`, :class:`RandomFramesSampler`,
  :class:`AllFramesSampler`, :class:`AllClipsSampler`: the video-ReID samplers (GLTR training, torchreid's
  "evenly" / "random" / "all" / "dense").

Frame samplers pick frames inside one video; which videos make up a batch is the business of the batch
samplers (``video_attn.data.batch_samplers``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["AllClipsSampler", "AllFramesSampler", "ConsecutiveSampler", "DenseSampler", "EvenlySampler",
           "FrameSampler", "RandomFramesSampler", "SegmentSampler", "build_frame_sampler"]


def _check_positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_mode(mode: str, valid: tuple[str, ...]) -> str:
    if mode not in valid:
        raise ValueError(f"unknown sampling mode {mode!r}; valid: {', '.join(valid)}")
    return mode


def _check_frames(num_frames: int) -> int:
    if num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    return int(num_frames)


def _spread(num_frames: int, length: int) -> np.ndarray:
    """``length`` indices spread evenly over ``num_frames`` (repeats when the video is shorter)."""
    return (np.arange(length) * num_frames // length).astype(np.int64)


class FrameSampler:
    """Base class: subclasses implement ``__call__`` and set ``clip_len`` and ``num_views``
    (-1 when the value depends on the video's length)."""

    clip_len: int
    num_views: int

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class SegmentSampler(FrameSampler):
    """TSN segment sampling: ``num_segments`` equal segments, one frame from each.

    Modes (as TSN / TSM / TANet's ``TSNDataSet``):
        ``"random"`` (train): segment length ``n // T``; a random frame in each. Videos with fewer than
            ``T`` frames take ``T`` indices spread over the video (TSM's loader returns all zeros there).
        ``"center"`` (val): the centre frame ``int(n / T * (i + 0.5))`` of each segment.
        ``"uniform"`` (multi-view test, "uniform-k"): ``num_clips`` grids shifted by ``(j + 0.5) / k`` of a
            segment, so ``k=1`` is ``"center"``. (TSM's ``twice_sample`` uses shifts 0 and 0.5 instead.)
    With ``num_clips > 1`` the random mode draws independent clips.
    """

    def __init__(self, num_segments: int, mode: str = "random", num_clips: int = 1) -> None:
        self.clip_len = _check_positive("num_segments", num_segments)
        self.mode = _check_mode(mode, ("random", "center", "uniform"))
        self.num_views = _check_positive("num_clips", num_clips)
        if mode == "center" and num_clips != 1:
            raise ValueError("SegmentSampler mode 'center' has one view; use 'uniform' for num_clips > 1")

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        n, t = _check_frames(num_frames), self.clip_len
        if self.mode == "random":
            segment = n // t
            if segment == 0:
                return np.tile(_spread(n, t), (self.num_views, 1))
            starts = np.arange(t, dtype=np.int64) * segment
            return starts + rng.integers(0, segment, size=(self.num_views, t))
        shifts = (np.arange(self.num_views) + 0.5) / self.num_views
        tick = n / t
        grid = tick * (np.arange(t)[None, :] + shifts[:, None])
        return np.minimum(grid.astype(np.int64), n - 1)


class DenseSampler(FrameSampler):
    """Dense sampling: ``clip_len`` frames at stride ``frame_interval`` inside a window of
    ``clip_len * frame_interval`` frames; indices wrap modulo ``n`` for videos shorter than the window.

    Modes (TSM / TANet ``dense_sample``): ``"random"`` (train) starts the window uniformly in
    ``[0, n - window]``; ``"uniform"`` (test) takes ``num_clips`` window starts evenly spaced over the same
    range (``np.linspace``, truncated to int; TANet tests Kinetics with 10 windows).
    """

    def __init__(self, clip_len: int, frame_interval: int, mode: str = "random", num_clips: int = 1) -> None:
        self.clip_len = _check_positive("clip_len", clip_len)
        self.frame_interval = _check_positive("frame_interval", frame_interval)
        self.mode = _check_mode(mode, ("random", "uniform"))
        self.num_views = _check_positive("num_clips", num_clips)

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        n = _check_frames(num_frames)
        last_start = max(n - self.clip_len * self.frame_interval, 0)
        if self.mode == "random":
            starts = rng.integers(0, last_start + 1, size=self.num_views)
        else:
            starts = np.linspace(0, last_start, num=self.num_views).astype(np.int64)
        offsets = np.arange(self.clip_len, dtype=np.int64) * self.frame_interval
        return (starts[:, None].astype(np.int64) + offsets[None, :]) % n


class ConsecutiveSampler(FrameSampler):
    """``clip_len`` consecutive frames (GLTR / video-ReID training).

    ``"random"`` starts uniformly in ``[0, n - clip_len]``; ``"start"`` starts at frame 0. A video shorter
    than the clip is repeated cyclically (0, 1, ..., n-1, 0, 1, ...), as GLTR's loader does.
    """

    def __init__(self, clip_len: int, mode: str = "random", num_clips: int = 1) -> None:
        self.clip_len = _check_positive("clip_len", clip_len)
        self.mode = _check_mode(mode, ("random", "start"))
        self.num_views = _check_positive("num_clips", num_clips)

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        n = _check_frames(num_frames)
        last_start = max(n - self.clip_len, 0)
        if self.mode == "random":
            starts = rng.integers(0, last_start + 1, size=self.num_views)
        else:
            starts = np.zeros(self.num_views, dtype=np.int64)
        return (starts[:, None] + np.arange(self.clip_len)[None, :]).astype(np.int64) % n


class EvenlySampler(FrameSampler):
    """torchreid's "evenly" sampling: ``clip_len`` chunks covering the whole video, one frame per chunk.

    ``"center"`` takes the centre of each chunk, ``"random"`` a random frame in each. Chunks are
    ``[floor(i n / T), floor((i + 1) n / T))`` (all frames covered). A video shorter than the clip gives all
    its frames followed by the last frame repeated (torchreid's padding).
    """

    def __init__(self, clip_len: int, mode: str = "center", num_clips: int = 1) -> None:
        self.clip_len = _check_positive("clip_len", clip_len)
        self.mode = _check_mode(mode, ("random", "center"))
        self.num_views = _check_positive("num_clips", num_clips)

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        n, t = _check_frames(num_frames), self.clip_len
        if n < t:
            padded = np.concatenate([np.arange(n), np.full(t - n, n - 1)]).astype(np.int64)
            return np.tile(padded, (self.num_views, 1))
        bounds = np.arange(t + 1, dtype=np.int64) * n // t
        lengths = bounds[1:] - bounds[:-1]
        if self.mode == "center":
            return np.tile(bounds[:-1] + lengths // 2, (self.num_views, 1))
        return bounds[:-1] + (rng.random((self.num_views, t)) * lengths).astype(np.int64)


class RandomFramesSampler(FrameSampler):
    """``clip_len`` distinct frames drawn at random, in temporal order (torchreid's "random").

    A video shorter than the clip gives every frame plus random repeats, sorted.
    """

    def __init__(self, clip_len: int, num_clips: int = 1) -> None:
        self.clip_len = _check_positive("clip_len", clip_len)
        self.num_views = _check_positive("num_clips", num_clips)

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        n, t = _check_frames(num_frames), self.clip_len
        views = []
        for _ in range(self.num_views):
            if n >= t:
                picked = rng.choice(n, size=t, replace=False)
            else:
                picked = np.concatenate([np.arange(n), rng.integers(0, n, size=t - n)])
            views.append(np.sort(picked))
        return np.stack(views).astype(np.int64)


class AllFramesSampler(FrameSampler):
    """Every frame, in order: shape ``(1, n)`` (GLTR / video-ReID test on whole tracklets)."""

    def __init__(self) -> None:
        self.clip_len = -1  # variable: the whole video
        self.num_views = 1

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        return np.arange(_check_frames(num_frames), dtype=np.int64)[None, :]


class AllClipsSampler(FrameSampler):
    """All non-overlapping clips of ``clip_len`` consecutive frames covering the video (torchreid's test
    mode ``dense``): shape ``(ceil(n / clip_len), clip_len)``; the last clip is padded with the last frame.
    """

    def __init__(self, clip_len: int) -> None:
        self.clip_len = _check_positive("clip_len", clip_len)
        self.num_views = -1  # variable: ceil(n / clip_len)

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        n = _check_frames(num_frames)
        num_clips = -(-n // self.clip_len)
        idx = np.arange(num_clips * self.clip_len, dtype=np.int64)
        return np.minimum(idx, n - 1).reshape(num_clips, self.clip_len)


def build_frame_sampler(split_cfg: Any, data_cfg: Any, clip_len: int, train: bool) -> FrameSampler:
    """The frame sampler of a config (``data.<split>.sampler``, ``.num_clips``, ``data.frame_interval``).

    ``train`` picks the random mode of each sampler, otherwise the deterministic test mode:
    tsn -> random / center (``num_clips == 1``) / uniform-k; dense -> random / uniform (k windows);
    consecutive -> random / start; evenly -> random / center; random and all have a single mode.
    """
    name = split_cfg.sampler
    num_clips = int(split_cfg.num_clips)
    if name == "tsn":
        mode = "random" if train else ("center" if num_clips == 1 else "uniform")
        return SegmentSampler(clip_len, mode=mode, num_clips=num_clips)
    if name == "dense":
        return DenseSampler(clip_len, int(data_cfg.frame_interval), mode="random" if train else "uniform",
                            num_clips=num_clips)
    if name == "consecutive":
        return ConsecutiveSampler(clip_len, mode="random" if train else "start", num_clips=num_clips)
    if name == "evenly":
        return EvenlySampler(clip_len, mode="random" if train else "center", num_clips=num_clips)
    if name == "random":
        return RandomFramesSampler(clip_len, num_clips=num_clips)
    if name == "all":
        if num_clips != 1:
            raise ValueError("sampler 'all' takes every frame once; num_clips must be 1")
        return AllFramesSampler()
    raise ValueError(f"unknown frame sampler {name!r} (data.<split>.sampler); valid: tsn, dense, "
                     "consecutive, evenly, random, all")
