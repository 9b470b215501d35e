"""PyAV (FFmpeg) reader: the robust fallback, and the backend for files decord cannot open.

At open the container is demuxed once without decoding (cheap) to build the presentation-time table of
the video stream: frame ``i`` is the ``i``-th smallest packet timestamp, which is how decord indexes frames
too, so both backends return identical frames for the same indices on H.264 files. The packet count is the
verified frame count; the container's declared count (``metadata_frames``) can be larger on truncated files.

Sparse reads seek to the keyframe at or before the first wanted frame and decode forward, only as far as
needed; a later wanted frame is reached by decoding on when no keyframe lies between, or by another seek.
A decode error (a damaged tail) ends decoding: frames past the last decodable one are clamped to it and
``num_frames`` shrinks to the verified count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import av
import numpy as np

from .base import DecodeError, VideoReader

_LOGGER = logging.getLogger(__name__)


class PyAVReader(VideoReader):
    """Random frame access through PyAV.

    Args:
        path: video file.
        num_threads: decoder threads; 1 (the default) inside DataLoader workers, 0 lets FFmpeg choose.
    """

    def __init__(self, path: str, num_threads: int = 1) -> None:
        self.path = str(path)
        try:
            self._container = av.open(self.path)
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise DecodeError(f"{self.path}: PyAV cannot open the file: {exc}") from None
        try:
            if not self._container.streams.video:
                raise DecodeError(f"{self.path}: no video stream")
            self._stream = self._container.streams.video[0]
            if num_threads != 1:
                self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = num_threads
            self.metadata_frames = int(self._stream.frames or 0)
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.fps = float(rate) if rate else 0.0
            self._pts, self._keyframes = self._index_packets()
        except DecodeError:
            self._container.close()
            raise
        self.num_frames = len(self._pts)
        if self.num_frames == 0:
            self._container.close()
            raise DecodeError(f"{self.path}: the video stream has no frames")
        if self.metadata_frames and self.metadata_frames != self.num_frames:
            _LOGGER.debug("%s: container declares %d frames, %d found", self.path, self.metadata_frames,
                          self.num_frames)

    @property
    def max_pts(self) -> int:
        """Largest presentation timestamp of the stream (in stream time-base units)."""
        return int(self._pts[-1])

    def _index_packets(self) -> tuple[np.ndarray, np.ndarray]:
        pts, keyframes = [], []
        try:
            for packet in self._container.demux(self._stream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None or packet.size == 0:  # the flush packet at the end carries no frame
                    continue
                pts.append(stamp)
                if packet.is_keyframe:
                    keyframes.append(stamp)
        except av.error.FFmpegError as exc:
            _LOGGER.warning("%s: demuxing stopped early (%s); using the %d frames found", self.path, exc,
                            len(pts))
        pts_arr = np.unique(np.asarray(pts, dtype=np.int64))
        key_arr = np.unique(np.asarray(keyframes, dtype=np.int64))
        if pts_arr.size and (key_arr.size == 0 or key_arr[0] > pts_arr[0]):
            # Seeking to the first timestamp always works, so treat it as a keyframe.
            key_arr = np.concatenate([pts_arr[:1], key_arr])
        return pts_arr, key_arr

    def _decode_from(self, pts: int) -> Iterator[av.VideoFrame]:
        """Frames in presentation order from the keyframe at ``pts``; stops quietly at a damaged packet."""
        self._container.seek(int(pts), stream=self._stream, backward=True, any_frame=False)
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    _LOGGER.warning("%s: damaged packet at pts %s (%s); stopping there", self.path,
                                    packet.pts, exc)
                    # The decoder still holds frames it reordered before the damaged packet.
                    yield from self._stream.codec_context.decode(None)
                    return
                yield from frames
        except av.error.FFmpegError as exc:
            _LOGGER.warning("%s: demuxing failed (%s); stopping there", self.path, exc)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        wanted = np.unique(indices)
        targets = self._pts[wanted]
        decoded: dict[int, np.ndarray] = {}
        last = None  # (pts, av.VideoFrame) of the newest frame decoded, for clamping a damaged tail
        frames = None
        position = None  # pts of the last frame the current decoder produced
        pos = 0
        while pos < len(targets):
            target = int(targets[pos])
            keyframe = int(self._keyframes[np.searchsorted(self._keyframes, target, side="right") - 1])
            if frames is None or position is None or position >= target or keyframe > position:
                frames = self._decode_from(keyframe)
                position = None
            for frame in frames:
                stamp = frame.pts if frame.pts is not None else frame.dts
                if stamp is None:
                    continue
                position = int(stamp)
                if last is None or position > last[0]:
                    last = (position, frame)
                if position >= int(targets[pos]):
                    array = frame.to_ndarray(format="rgb24")
                    # Normally an exact match; a frame the decoder dropped maps to the next one.
                    while pos < len(targets) and int(targets[pos]) <= position:
                        decoded[int(targets[pos])] = array
                        pos += 1
                if pos >= len(targets) or position >= target:
                    break
            else:
                break  # the stream ended (or is damaged) before the remaining targets
        if pos < len(targets):
            if last is None:
                # Nothing decoded in this call: decode the stretch before the first missing frame.
                raise DecodeError(f"{self.path}: cannot decode frame {int(wanted[pos])} "
                                  f"(of {self.num_frames} indexed)")
            verified = int(np.searchsorted(self._pts, last[0], side="right"))
            if verified < self.num_frames:
                _LOGGER.warning("%s: only %d of %d frames decodable", self.path, verified, self.num_frames)
                self.num_frames = verified
            array = last[1].to_ndarray(format="rgb24")
            for target in targets[pos:]:
                decoded[int(target)] = array
        by_index = {int(i): decoded[int(p)] for i, p in zip(wanted, targets)}
        return np.stack([by_index[int(i)] for i in indices])

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None


def reread_with_pyav(reader: VideoReader, indices: np.ndarray) -> np.ndarray:
    """The frames at ``indices`` of ``reader``'s file, read with PyAV after ``reader``'s own decoder failed;
    ``reader``'s length shrinks to the frames PyAV finds (a damaged tail)."""
    with PyAVReader(reader.path) as fallback:
        frames = fallback.get_frames(indices)
        reader.num_frames = min(reader.num_frames, len(fallback))
    return frames
