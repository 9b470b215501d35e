"""Video decoders behind one interface: ``open_video(path, backend)`` -> a :class:`VideoReader`.

Backends: ``"decord"`` (default, fast sparse access), ``"pyav"`` (robust; also used automatically when
decord cannot open a file) and ``"frames"`` (a folder of images; chosen automatically for a directory).
:class:`ArrayReader` gives frames already in memory the same interface.
"""

from __future__ import annotations

import logging
import os

from .array_reader import ArrayReader
from .base import DecodeError, VideoReader
from .decord_reader import DecordReader, decord_available
from .frame_folder import FrameFolderReader
from .pyav_reader import PyAVReader

__all__ = ["BACKENDS", "ArrayReader", "DecodeError", "DecordReader", "FrameFolderReader", "PyAVReader",
           "VideoReader", "open_video"]

BACKENDS = ("decord", "pyav", "frames")
_LOGGER = logging.getLogger(__name__)


def open_video(path: str | os.PathLike, backend: str = "decord", num_threads: int = 1, fallback: bool = True,
               frame_template: str = "img_{:05d}.jpg", num_frames: int | None = None,
               verify_frames: bool = True) -> VideoReader:
    """Open a video file or frame folder.

    Args:
        path: video file, or folder of frames (always read with the ``"frames"`` backend).
        backend: ``"decord"``, ``"pyav"`` or ``"frames"``.
        num_threads: decoder threads (keep 1 inside DataLoader workers).
        fallback: with ``backend="decord"``, open the file with PyAV when decord cannot (or is not installed).
        frame_template, num_frames: frame-folder naming and expected frame count.
        verify_frames: with decord, check its declared frame count against the packets (PyAV demux, no
            decoding): decord 0.6 can hang on indices past the real end.

    Raises:
        DecodeError: the file is missing, empty, or no backend can open it; the message names the path.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; valid: {', '.join(BACKENDS)}")
    path = os.fspath(path)
    if backend == "frames" or os.path.isdir(path):
        return FrameFolderReader(path, template=frame_template, num_frames=num_frames)
    if not os.path.exists(path):
        raise DecodeError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: empty file")
    if backend == "pyav" or (not decord_available() and fallback):
        return PyAVReader(path, num_threads=num_threads)
    try:
        return DecordReader(path, num_threads=num_threads, verify_frames=verify_frames)
    except DecodeError as decord_error:
        if not fallback:
            raise
        try:
            reader = PyAVReader(path, num_threads=num_threads)
        except DecodeError as pyav_error:
            raise DecodeError(f"{decord_error}; {pyav_error}") from None
        _LOGGER.info("%s: decord cannot open it, reading with PyAV", path)
        return reader
