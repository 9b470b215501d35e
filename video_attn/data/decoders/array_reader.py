"""Frames already in memory as a reader: lets decoded arrays (from another library, a camera, a test) go
through the same frame samplers and transforms as files."""

from __future__ import annotations

import numpy as np

from .base import VideoReader


class ArrayReader(VideoReader):
    """Random access to a uint8 ``(T, H, W, 3)`` RGB array (no copy).

    Args:
        frames: the video, uint8 ``(T, H, W, 3)`` with ``T >= 1``.
        fps: its frame rate (0.0: unknown).
        path: the name messages give it.
    """

    def __init__(self, frames: np.ndarray, fps: float = 0.0, path: str = "<array>") -> None:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise ValueError(
                f"{path}: expected uint8 RGB frames of shape (T, H, W, 3) with T >= 1, got {frames.dtype} "
                f"{frames.shape}"
            )
        self.frames = frames
        self.path = path
        self.num_frames = len(frames)
        self.fps = float(fps)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        return self.frames[indices]
