"""The reader interface shared by every decoder backend, and the error they raise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class DecodeError(RuntimeError):
    """A video (or frame folder) that cannot be opened or decoded; the message names the path."""


class VideoReader:
    """Random access to the frames of one video.

    Subclasses set ``num_frames`` (the verified frame count, never more than can actually be decoded once
    the backend has found out) and ``fps``, and implement :meth:`_read` for indices already clamped to
    ``[0, num_frames)``. Readers are context managers; ``close()`` releases the decoder (decord's memory
    grows while a reader is alive, so datasets open one per item and close it at once).
    """

    path: str
    num_frames: int
    fps: float

    def __len__(self) -> int:
        return self.num_frames

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 RGB of shape (T, H, W, 3).

        Indices past the real end are clamped to the last frame (metadata frame counts can be wrong);
        negative indices are an error.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError(f"{self.path}: get_frames() needs at least one index")
        if idx.min() < 0:
            raise ValueError(f"{self.path}: negative frame index {int(idx.min())}")
        if self.num_frames <= 0:
            raise DecodeError(f"{self.path}: video has no frames")
        return self._read(np.minimum(idx, self.num_frames - 1))

    def _read(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder; the reader cannot be used afterwards."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:.3f})"
