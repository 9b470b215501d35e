"""Video decoders behind one interface: ``open_video(path, backend)`` -> a :class:`VideoReader`.

Backends: ``"decord"`` (default, fast sparse access), ``"pyav"`` (robust; also used automatically when
decord cannot open a file), ``"torchcodec"`` (PyTorch's FFmpeg decoder, optional: needs the torchcodec package
and FFmpeg's shared libraries; can decode on CUDA) and ``"frames"`` (a folder of images; chosen automatically
for a directory).
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
from .torchcodec_reader import TorchCodecReader, torchcodec_available, torchcodec_unavailable_reason

__all__ = ["BACKENDS", "ArrayReader", "DecodeError", "DecordReader", "FrameFolderReader", "PyAVReader",
           "TorchCodecReader", "VideoReader", "open_video", "torchcodec_available",
           "torchcodec_unavailable_reason"]

BACKENDS = ("decord", "pyav", "torchcodec", "frames")
_LOGGER = logging.getLogger(__name__)


def open_video(path: str | os.PathLike, backend: str = "decord", num_threads: int = 1, fallback: bool = True,
               frame_template: str = "img_{:05d}.jpg", num_frames: int | None = None,
               verify_frames: bool = True, device: str = "cpu") -> VideoReader:
    """Open a video file or frame folder.

    Args:
        path: video file, or folder of frames (always read with the ``"frames"`` backend).
        backend: ``"decord"``, ``"pyav"``, ``"torchcodec"`` or ``"frames"``.
        num_threads: decoder threads (keep 1 inside DataLoader workers).
        fallback: with ``backend="decord"`` or ``"torchcodec"``, open the file with PyAV when that backend
            cannot. A missing decord also falls back; a missing torchcodec (or FFmpeg libraries) is an error,
            since asking for it is a setup choice.
        frame_template, num_frames: frame-folder naming and expected frame count.
        verify_frames: with decord, check its declared frame count against the packets (PyAV demux, no
            decoding): decord 0.6 can hang on indices past the real end.
        device: ``"cpu"``, or ``"cuda"`` for GPU decoding with ``backend="torchcodec"`` (frames still come
            back as host numpy arrays; not in forked DataLoader workers).

    Raises:
        DecodeError: the file is missing, empty, or no backend can open it, or torchcodec is requested and
            unavailable; the message names the path.
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
    if device != "cpu" and backend != "torchcodec":
        raise ValueError(f"decode device {device!r} needs backend='torchcodec' (got {backend!r})")
    if backend == "pyav" or (backend == "decord" and not decord_available() and fallback):
        return PyAVReader(path, num_threads=num_threads)
    if backend == "torchcodec":
        reason = torchcodec_unavailable_reason(device)
        if reason is not None:  # a setup problem, not a bad file: never fall back to PyAV silently
            raise DecodeError(f"{path}: backend 'torchcodec' unavailable: {reason}")
    try:
        if backend == "torchcodec":
            return TorchCodecReader(path, num_threads=num_threads, device=device)
        return DecordReader(path, num_threads=num_threads, verify_frames=verify_frames)
    except DecodeError as backend_error:
        if not fallback:
            raise
        try:
            reader = PyAVReader(path, num_threads=num_threads)
        except DecodeError as pyav_error:
            raise DecodeError(f"{backend_error}; {pyav_error}") from None
        _LOGGER.info("%s: %s cannot open it, reading with PyAV", path, backend)
        return reader
