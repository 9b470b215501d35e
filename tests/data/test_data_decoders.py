"""Decoders: backend parity with a sequential decode, clamping, fallback, damaged files, frame folders."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from video_attn.data.decoders import (
    DecodeError,
    DecordReader,
    FrameFolderReader,
    PyAVReader,
    open_video,
)

SPARSE = [37, 3, 3, 0, 22, 15, 39, 8, 9]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_sparse_frames_match_sequential_decode(video_dir, ground_truth, backend):
    truth = ground_truth["good.mp4"]
    with open_video(video_dir / "good.mp4", backend=backend) as reader:
        assert len(reader) == len(truth) == 40
        assert reader.fps == pytest.approx(25.0)
        frames = reader.get_frames(SPARSE)
    assert frames.dtype == np.uint8 and frames.shape == (len(SPARSE), 48, 64, 3)
    np.testing.assert_array_equal(frames, truth[SPARSE])


def test_decord_and_pyav_return_identical_frames(video_dir):
    indices = np.arange(40)[::-1]  # backwards: every read needs a new seek
    with DecordReader(str(video_dir / "good.mp4")) as a, PyAVReader(str(video_dir / "good.mp4")) as b:
        np.testing.assert_array_equal(a.get_frames(indices), b.get_frames(indices))
        # repeated reads on one reader (decoder state reused or re-seeked) stay correct
        np.testing.assert_array_equal(a.get_frames([5, 6, 30]), b.get_frames([5, 6, 30]))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_indices_past_end_are_clamped(video_dir, ground_truth, backend):
    truth = ground_truth["short.mp4"]
    with open_video(video_dir / "short.mp4", backend=backend) as reader:
        assert len(reader) == 5
        frames = reader.get_frames([0, 4, 5, 100])
        np.testing.assert_array_equal(frames, truth[[0, 4, 4, 4]])
        with pytest.raises(ValueError, match="negative"):
            reader.get_frames([-1])
        with pytest.raises(ValueError, match="at least one"):
            reader.get_frames([])


def test_truncated_file_falls_back_and_clamps(video_dir, caplog):
    path = video_dir / "truncated.mp4"
    with pytest.raises(DecodeError, match="truncated.mp4"):
        open_video(path, backend="decord", fallback=False)
    with caplog.at_level(logging.WARNING):
        reader = open_video(path, backend="decord")  # decord refuses the damaged index; PyAV reads it
    assert isinstance(reader, PyAVReader)
    assert reader.metadata_frames == 40 and len(reader) < 40
    indexed = len(reader)
    frames = reader.get_frames([0, indexed - 1, 39])
    assert frames.shape == (3, 48, 64, 3)
    assert len(reader) <= indexed  # the damaged tail shrinks the verified count
    np.testing.assert_array_equal(frames[2], reader.get_frames([len(reader) - 1])[0])
    reader.close()


@pytest.mark.parametrize("name, reason", [
    ("garbage.mp4", "cannot open"), ("empty.mp4", "empty file"), ("missing.mp4", "no such file"),
    ("truncated_moov.mp4", "cannot open"),
])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_unreadable_files_raise_decode_error_naming_the_path(video_dir, name, reason, backend):
    with pytest.raises(DecodeError, match=reason) as info:
        open_video(video_dir / name, backend=backend)
    assert name in str(info.value)


def test_unknown_backend(video_dir):
    with pytest.raises(ValueError, match="decord, pyav, torchcodec, frames"):
        open_video(video_dir / "good.mp4", backend="opencv")


def test_frame_folder_reader(frame_dir):
    truth = np.stack([np.asarray(Image.open(frame_dir / "a" / f"img_{i:05d}.png")) for i in range(1, 13)])
    with open_video(frame_dir / "a", frame_template="img_{:05d}.png", num_frames=12) as reader:
        assert isinstance(reader, FrameFolderReader) and len(reader) == 12
        np.testing.assert_array_equal(reader.get_frames([11, 0, 5, 20]), truth[[11, 0, 5, 11]])
    # counted when not given; a list claiming more frames than exist is corrected
    assert len(FrameFolderReader(str(frame_dir / "a"), "img_{:05d}.png")) == 12
    assert len(FrameFolderReader(str(frame_dir / "b"), "img_{:05d}.png", num_frames=50)) == 6
    with pytest.raises(DecodeError, match="no frames named"):
        FrameFolderReader(str(frame_dir / "a"), "frame_{:04d}.jpg")
    with pytest.raises(DecodeError, match="does not exist"):
        open_video(frame_dir / "nope", backend="frames")


def test_frame_folder_unreadable_frame(tmp_path):
    (tmp_path / "v").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "v" / "img_00001.jpg")
    (tmp_path / "v" / "img_00002.jpg").write_bytes(b"not a jpeg")
    reader = open_video(tmp_path / "v", num_frames=2)
    assert reader.get_frames([0]).shape == (1, 8, 8, 3)
    with pytest.raises(DecodeError, match="img_00002.jpg"):
        reader.get_frames([1])


def test_decord_read_error_falls_back_to_pyav(video_dir, ground_truth, caplog):
    import decord

    reader = DecordReader(str(video_dir / "good.mp4"))

    class Failing:
        def get_batch(self, indices):
            raise decord.DECORDError("simulated seek failure past the real end")

    reader._vr = Failing()
    with caplog.at_level(logging.WARNING):
        frames = reader.get_frames([39, 2, 45])
    assert "re-reading with PyAV" in caplog.text
    np.testing.assert_array_equal(frames, ground_truth["good.mp4"][[39, 2, 39]])
    assert len(reader) == 40


def test_decord_length_is_verified_against_packets(video_dir, ground_truth, monkeypatch):
    """decord 0.6 trusts the container's frame count and can hang past the real end (dmlc/decord#373):
    simulate an over-reporting container and check that no index past the 40 real frames reaches decord."""
    import video_attn.data.decoders.decord_reader as decord_reader

    real_video_reader = decord_reader.decord.VideoReader
    requested = []

    class OverReporting:
        def __init__(self, *args, **kwargs):
            self._vr = real_video_reader(*args, **kwargs)

        def __len__(self):
            return len(self._vr) + 25

        def get_avg_fps(self):
            return self._vr.get_avg_fps()

        def get_batch(self, indices):
            requested.extend(indices)
            return self._vr.get_batch(indices)

    monkeypatch.setattr(decord_reader.decord, "VideoReader", OverReporting)
    reader = open_video(video_dir / "good.mp4", backend="decord")
    assert isinstance(reader, DecordReader) and len(reader) == 40
    frames = reader.get_frames([0, 50, 64])
    assert max(requested) == 39
    np.testing.assert_array_equal(frames, ground_truth["good.mp4"][[0, 39, 39]])
    unverified = open_video(video_dir / "good.mp4", backend="decord", verify_frames=False)
    assert len(unverified) == 65
