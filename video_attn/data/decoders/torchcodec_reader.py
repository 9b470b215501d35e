"""torchcodec reader: FFmpeg decoding through PyTorch's torchcodec (``VideoDecoder.get_frames_at``), on the
CPU or, with ``device="cuda"``, on the GPU's video decoder (NVDEC).

Frame indexing: the decoder is opened in torchcodec's ``"exact"`` seek mode, which scans the packets at open
(demuxing only, like PyAVReader's index) so that frame ``i`` is the ``i``-th frame in presentation order, as
with decord and PyAV: on H.264 files the CPU frames are identical to theirs. The reader's length is the
scanned frame count, never the container header's (which can be larger: a truncated file declares the frames
it should have had); should a torchcodec version report no scanned count, the packets are counted with PyAV,
as DecordReader does. A damaged tail still passes the scan (its packets exist but do not decode), so on any
read error the same indices are re-read with PyAV, which clamps to the last decodable frame and shrinks
``num_frames`` to the verified count.

Caveats:

* torchcodec does not bundle FFmpeg (PyAV's and decord's wheels do): it needs FFmpeg's shared libraries
  (libavcodec, libavformat, ...; major versions 4 to 8) from the system, e.g. ``apt-get install ffmpeg`` on
  Debian/Ubuntu. It is imported only when this backend is used, so a missing torchcodec or FFmpeg never breaks
  ``import video_attn``; opening a reader then raises :class:`DecodeError` naming the fix.
* torchcodec applies a video's rotation metadata (phone videos); decord and PyAV return the stored
  orientation, so such files give transposed frames compared with the other backends.
* CUDA (``device="cuda"``): frames are decoded and converted to RGB on the GPU, then copied to a host numpy
  array, so the reader contract (uint8 ``(T, H, W, 3)`` numpy) is the same on both devices; the GPU's colour
  conversion is not bit-identical to FFmpeg's CPU conversion. CUDA cannot be initialised in forked DataLoader
  workers, so datasets decode on the GPU only with ``data.num_workers=0`` (``data.decode_device``). Where
  NVDEC is unavailable torchcodec silently decodes on the CPU; that is logged once per process.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

import numpy as np
import torch

from .base import DecodeError, VideoReader
from .pyav_reader import PyAVReader, reread_with_pyav

__all__ = ["TorchCodecReader", "torchcodec_available", "torchcodec_unavailable_reason"]

_LOGGER = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[torchcodec]", and FFmpeg libraries (Debian/Ubuntu: apt-get install ffmpeg)'
_LOAD_CAUSES = "FFmpeg's shared libraries (libavcodec ...) are missing, or torchcodec does not fit this torch"
# torchcodec's C++ errors start with "function, /path/to/file.cpp:line, "
_CPP_PREFIX = re.compile(r"^\w+, \S+:\d+, ")
@functools.cache
def _warn_cpu_fallback(device: str, status: str) -> None:
    # once per device and reason: the reason (codec, driver) holds for every file
    _LOGGER.warning("torchcodec decodes on the CPU instead of %s: %s", device, status)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return _CPP_PREFIX.sub("", text.splitlines()[0]) if text else type(exc).__name__


@functools.lru_cache(maxsize=1)
def _load_decoder_class() -> tuple[Any, str | None]:
    """``(torchcodec.decoders.VideoDecoder, None)``, or ``(None, reason)`` when it cannot be used."""
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "torchcodec":
            return None, f"torchcodec is not installed: {INSTALL_HINT}"
        return None, f"torchcodec cannot be imported ({_first_line(exc)}): {INSTALL_HINT}"
    except Exception as exc:  # noqa: BLE001 - torchcodec < 0.17 raises RuntimeError at import without FFmpeg
        return None, f"torchcodec cannot load its core ({_first_line(exc)}): {_LOAD_CAUSES}; {INSTALL_HINT}"
    # torchcodec >= 0.17 imports without FFmpeg and only fails at the first decoder (with a long multi-version
    # traceback in the message); its public ffmpeg_major_version is None in that case.
    if getattr(torchcodec, "ffmpeg_major_version", 0) is None:
        return None, f"torchcodec cannot load its core: {_LOAD_CAUSES}; {INSTALL_HINT}"
    return VideoDecoder, None


def torchcodec_unavailable_reason(device: str = "cpu") -> str | None:
    """None when the torchcodec backend can decode on ``device`` here, else one line saying why not and how
    to fix it."""
    reason = _load_decoder_class()[1]
    if reason is None and device != "cpu":
        if not device.startswith("cuda"):
            return f"decode device must be 'cpu' or 'cuda', got {device!r}"
        if not torch.cuda.is_available():
            return f"decoding on {device!r} needs a CUDA device (torch.cuda.is_available() is False)"
    return reason


def torchcodec_available() -> bool:
    """Whether torchcodec is installed and has found FFmpeg's shared libraries."""
    return _load_decoder_class()[0] is not None


class TorchCodecReader(VideoReader):
    """Random frame access through torchcodec's ``VideoDecoder``.

    Args:
        path: video file.
        num_threads: FFmpeg decoding threads on the CPU (1 in DataLoader workers; 0 lets FFmpeg choose);
            ignored on CUDA.
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (NVDEC; see the module docstring). Frames are
            returned as a host numpy array either way.

    Raises:
        DecodeError: torchcodec or FFmpeg's libraries are missing, CUDA is not available, or the file cannot
            be opened; the message names the path.
    """

    def __init__(self, path: str, num_threads: int = 1, device: str = "cpu") -> None:
        self.path = str(path)
        self.device = str(device)
        self._decoder: Any = None
        reason = torchcodec_unavailable_reason(self.device)
        if reason is not None:
            raise DecodeError(f"{self.path}: backend 'torchcodec' unavailable: {reason}")
        decoder_class = _load_decoder_class()[0]
        try:
            self._decoder = decoder_class(self.path, seek_mode="exact", dimension_order="NHWC",
                                          num_ffmpeg_threads=num_threads, device=self.device)
        except (RuntimeError, ValueError, OSError) as exc:
            raise DecodeError(f"{self.path}: torchcodec cannot open the file: {_first_line(exc)}") from None
        metadata = self._decoder.metadata
        # the header's rate, as decord and PyAV report it (torchcodec's average_fps is from the scan)
        self.fps = float(metadata.average_fps_from_header or metadata.average_fps or 0.0)
        header = metadata.num_frames_from_header
        scanned = metadata.num_frames_from_content
        if scanned is None:
            self.num_frames = self._count_packets(int(header or len(self._decoder)))
        else:
            self.num_frames = int(scanned)
            if header and header != scanned:
                _LOGGER.info("%s: container declares %d frames, %d exist; using %d", self.path, header,
                             scanned, scanned)
        if self.num_frames == 0:
            self.close()
            raise DecodeError(f"{self.path}: the video stream has no frames")

    def _count_packets(self, declared: int) -> int:
        """The declared count capped by PyAV's packet count (for a torchcodec that skipped the scan)."""
        try:
            with PyAVReader(self.path) as probe:
                return min(declared, len(probe))
        except DecodeError as exc:
            _LOGGER.debug("%s: frame count not verified (%s)", self.path, exc)
            return declared

    def _read(self, indices: np.ndarray) -> np.ndarray:
        # One decode (and, on CUDA, one device-to-host copy) per distinct frame, in increasing order so that
        # the decoder only moves forward between keyframes.
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            batch = self._decoder.get_frames_at(unique.tolist()).data
        except (RuntimeError, IndexError, ValueError) as exc:
            _LOGGER.warning("%s: torchcodec failed (%s); re-reading with PyAV", self.path, _first_line(exc))
        else:
            status = getattr(self._decoder, "cpu_fallback", None) if self.device != "cpu" else None
            if status:
                _warn_cpu_fallback(self.device, str(status))
            return batch.cpu().numpy()[inverse.reshape(-1)]  # a copy: no view of torchcodec's memory
        return reread_with_pyav(self, indices)

    def close(self) -> None:
        self._decoder = None
