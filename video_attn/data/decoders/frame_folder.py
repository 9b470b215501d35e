"""Frame-folder reader: one image file per frame, named by a template (``img_00001.jpg`` by default).

This is the layout of TSN / TSM / TANet's extracted frames and of mmaction2's "rawframes". The frame count
given by a list file is verified against the folder (one ``stat`` of the last frame; a full listing only
when that fails), and indices past the real end are clamped.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from PIL import Image

from .base import DecodeError, VideoReader

_LOGGER = logging.getLogger(__name__)


class FrameFolderReader(VideoReader):
    """Reads frames ``template.format(start_index + i)`` from ``directory``.

    Args:
        directory: folder holding the frames.
        template: file name of a frame given its number, e.g. ``"img_{:05d}.jpg"`` or ``"{:06d}.jpg"``.
        num_frames: frame count from the list file; None counts the folder.
        start_index: number of the first frame (1 in TSN-style folders).
        fps: nominal frame rate (0.0: unknown; frame folders carry none).
    """

    def __init__(self, directory: str, template: str = "img_{:05d}.jpg", num_frames: int | None = None,
                 start_index: int = 1, fps: float = 0.0) -> None:
        self.path = str(directory)
        self.template = template
        self.start_index = start_index
        self.fps = fps
        if not os.path.isdir(self.path):
            raise DecodeError(f"{self.path}: frame folder does not exist")
        if num_frames is None or num_frames <= 0 or not os.path.exists(self._frame_path(num_frames - 1)):
            counted = self._count()
            if num_frames is not None and num_frames > 0:
                _LOGGER.warning("%s: list says %d frames, folder has %d", self.path, num_frames, counted)
            num_frames = counted if num_frames is None or num_frames <= 0 else min(num_frames, counted)
        self.num_frames = int(num_frames)
        if self.num_frames == 0:
            raise DecodeError(f"{self.path}: no frames named like {template.format(start_index)!r}")

    def _frame_path(self, index: int) -> str:
        return os.path.join(self.path, self.template.format(self.start_index + index))

    def _count(self) -> int:
        names = set(os.listdir(self.path))
        count = 0
        while self.template.format(self.start_index + count) in names:
            count += 1
        return count

    def _read(self, indices: np.ndarray) -> np.ndarray:
        frames: dict[int, np.ndarray] = {}
        for index in np.unique(indices).tolist():
            path = self._frame_path(index)
            try:
                with Image.open(path) as image:
                    frames[index] = np.asarray(image.convert("RGB"))
            except (OSError, ValueError) as exc:
                raise DecodeError(f"{path}: cannot read frame: {exc}") from None
        shapes = {f.shape for f in frames.values()}
        if len(shapes) > 1:
            raise DecodeError(f"{self.path}: frames have different sizes {sorted(shapes)}")
        return np.stack([frames[int(i)] for i in indices])
