"""decord reader: the default backend for sparse frame access (``VideoReader.get_batch``).

decord 0.6's ``len()`` is the container's declared frame count (``nb_frames``, or duration x fps), which can
exceed the frames that exist; ``get_batch`` on such an index can spin forever in native code holding the
GIL (dmlc/decord#373), as can files whose timestamps overflow int32 (dmlc/decord#269). So at open the
video packets are counted with PyAV (demuxing only, ~3 ms for a 4 s 340p clip) and the reader's length is
the smaller count; a file with timestamps past int32 is refused, which makes ``open_video`` use PyAV.
On any read error the same indices are re-read with PyAV, which clamps a damaged tail.
Use ``num_threads=1`` inside DataLoader workers (the default) and drop the reader right after use:
decord's memory grows while a reader is alive.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from .base import DecodeError, VideoReader
from .pyav_reader import PyAVReader, reread_with_pyav

_LOGGER = logging.getLogger(__name__)

try:
    import decord

    _DECORD_ERRORS: tuple[type[BaseException], ...] = (decord.DECORDError, RuntimeError)
except ImportError:  # decord ships wheels for Linux x86_64 only
    decord = None
    _DECORD_ERRORS = (RuntimeError,)


_INT32_MAX = 2**31 - 1


def _reason(exc: BaseException) -> str:
    """First line of a decord error without its "[time] /src/file.cc:line: " prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text)


def decord_available() -> bool:
    return decord is not None


class DecordReader(VideoReader):
    """Random frame access through decord.

    Args:
        path: video file.
        num_threads: decoder threads (1 in DataLoader workers; 0 lets decord choose).
        verify_frames: count the packets with PyAV at open (see the module docstring); keep True unless
            the files are known to be clean.
    """

    def __init__(self, path: str, num_threads: int = 1, verify_frames: bool = True) -> None:
        if decord is None:
            raise DecodeError(f"{path}: decord is not installed (use backend='pyav')")
        self.path = str(path)
        try:
            self._vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=num_threads)
        except _DECORD_ERRORS as exc:
            raise DecodeError(f"{self.path}: decord cannot open the file: {_reason(exc)}") from None
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps())
        if verify_frames:
            self._verify_frame_count()
        if self.num_frames == 0:
            self.close()
            raise DecodeError(f"{self.path}: the video stream has no frames")

    def _verify_frame_count(self) -> None:
        try:
            probe = PyAVReader(self.path)
        except DecodeError as exc:
            _LOGGER.debug("%s: frame count not verified (%s)", self.path, exc)
            return
        with probe:
            packets, max_pts = len(probe), int(probe.max_pts)
        if max_pts >= _INT32_MAX:
            self.close()
            raise DecodeError(f"{self.path}: timestamps exceed int32, which hangs decord 0.6 (use PyAV)")
        if packets < self.num_frames:
            _LOGGER.info("%s: container declares %d frames, %d exist; using %d", self.path, self.num_frames,
                         packets, packets)
            self.num_frames = packets

    def _read(self, indices: np.ndarray) -> np.ndarray:
        try:
            return self._vr.get_batch(indices.tolist()).asnumpy()
        except _DECORD_ERRORS as exc:
            _LOGGER.warning("%s: decord failed (%s); re-reading with PyAV", self.path, _reason(exc))
        return reread_with_pyav(self, indices)

    def close(self) -> None:
        self._vr = None
