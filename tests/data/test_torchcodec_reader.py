"""torchcodec backend: frame parity with decord and PyAV, frame counts of damaged files, errors naming the
path, import safety without torchcodec or FFmpeg, the config keys and one dataset item.

Skipped when torchcodec is not installed; when it is installed but cannot load FFmpeg's shared libraries the
first test fails (CI installs them: .ci/run), since every other test would then only check error paths.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

if importlib.util.find_spec("torchcodec") is None:
    pytest.skip('torchcodec is not installed (pip install -e ".[torchcodec]")', allow_module_level=True)

import video_attn.data.decoders.torchcodec_reader as tc_reader  # noqa: E402
from video_attn.config.loader import config_from_dict  # noqa: E402
from video_attn.config.schema import Config, ConfigError  # noqa: E402
from video_attn.data.datasets.action_base import ActionDataset  # noqa: E402
from video_attn.data.datasets.action_build import build_action_dataset  # noqa: E402
from video_attn.data.decoders import (  # noqa: E402
    BACKENDS,
    DecodeError,
    DecordReader,
    PyAVReader,
    TorchCodecReader,
    open_video,
    torchcodec_available,
    torchcodec_unavailable_reason,
)
from video_attn.data.frame_sampling import SegmentSampler  # noqa: E402

SPARSE = [37, 3, 3, 0, 22, 15, 39, 8, 9, 9]  # unsorted, repeats, both ends


def test_ffmpeg_libraries_load():
    assert torchcodec_available(), torchcodec_unavailable_reason()
    assert "torchcodec" in BACKENDS


@pytest.mark.parametrize("name", ["good.mp4", "other.mp4"])
def test_sparse_frames_match_decord_pyav_and_sequential_decode(video_dir, ground_truth, name):
    path = str(video_dir / name)
    truth = ground_truth[name]
    indices = [i % len(truth) for i in SPARSE]
    with TorchCodecReader(path) as tc, DecordReader(path) as dec, PyAVReader(path) as pyav:
        assert len(tc) == len(dec) == len(pyav) == len(truth)
        assert tc.fps == pytest.approx(dec.fps) and tc.fps == pytest.approx(pyav.fps) and tc.fps == 25.0
        frames = tc.get_frames(indices)
        assert frames.dtype == np.uint8 and frames.shape == (len(indices), 48, 64, 3)
        assert frames.flags.c_contiguous
        np.testing.assert_array_equal(frames, truth[indices])
        np.testing.assert_array_equal(frames, dec.get_frames(indices))
        np.testing.assert_array_equal(frames, pyav.get_frames(indices))
        backwards = np.arange(len(truth))[::-1]
        np.testing.assert_array_equal(tc.get_frames(backwards), truth[backwards])
        # a second read on the same reader (decoder state reused) stays exact
        np.testing.assert_array_equal(tc.get_frames([5, 6, 30 % len(truth)]), truth[[5, 6, 30 % len(truth)]])


def test_open_video_and_clamping(video_dir, ground_truth):
    truth = ground_truth["short.mp4"]
    with open_video(video_dir / "short.mp4", backend="torchcodec") as reader:
        assert isinstance(reader, TorchCodecReader) and len(reader) == 5 and reader.fps == pytest.approx(25.0)
        np.testing.assert_array_equal(reader.get_frames([0, 4, 5, 100]), truth[[0, 4, 4, 4]])
        with pytest.raises(ValueError, match="negative"):
            reader.get_frames([-1])
    with pytest.raises(ValueError, match="needs backend='torchcodec'"):
        open_video(video_dir / "short.mp4", backend="pyav", device="cuda")


@pytest.mark.timeout(60)
def test_truncated_file_counts_real_frames_and_clamps_the_damaged_tail(video_dir, caplog):
    """The header declares 40 frames, 15 packets exist and the last few do not decode: no index may crash or
    hang, and the frames equal PyAV's (which the reader falls back to on the damaged tail)."""
    path = str(video_dir / "truncated.mp4")
    with caplog.at_level(logging.INFO):
        reader = open_video(path, backend="torchcodec", fallback=False)
    assert isinstance(reader, TorchCodecReader)
    assert "container declares 40 frames" in caplog.text
    scanned = len(reader)
    assert 0 < scanned < 40
    with PyAVReader(path) as pyav:
        assert scanned == len(pyav)  # the same packet count
        indices = [0, scanned - 1, 39, 2, 100]
        with caplog.at_level(logging.WARNING):
            frames = reader.get_frames(indices)
        expected = pyav.get_frames(indices)
    assert frames.shape == (5, 48, 64, 3)
    np.testing.assert_array_equal(frames, expected)
    assert "re-reading with PyAV" in caplog.text
    assert len(reader) <= scanned  # the verified count
    np.testing.assert_array_equal(reader.get_frames([len(reader) - 1])[0], frames[2])
    reader.close()


def test_frame_count_without_a_scan_is_checked_against_the_packets(video_dir, ground_truth, monkeypatch):
    """A torchcodec that reports only the header's count (here inflated to 65) is capped by PyAV's packet
    count, as for decord, so that no index past the 40 real frames reaches the decoder."""
    real_class = tc_reader._load_decoder_class()[0]
    requested = []

    class HeaderOnly:
        def __init__(self, *args, **kwargs):
            self._decoder = real_class(*args, **kwargs)
            self.metadata = dataclasses.replace(self._decoder.metadata, num_frames_from_header=65,
                                                num_frames_from_content=None)

        def __len__(self):
            return 65

        def get_frames_at(self, indices):
            requested.extend(indices)
            return self._decoder.get_frames_at(indices)

    monkeypatch.setattr(tc_reader, "_load_decoder_class", lambda: (HeaderOnly, None))
    with TorchCodecReader(str(video_dir / "good.mp4")) as reader:
        assert len(reader) == 40
        frames = reader.get_frames([0, 50, 64])
    assert max(requested) == 39
    np.testing.assert_array_equal(frames, ground_truth["good.mp4"][[0, 39, 39]])


@pytest.mark.parametrize("name, reason", [
    ("garbage.mp4", "torchcodec cannot open"), ("truncated_moov.mp4", "torchcodec cannot open"),
    ("empty.mp4", "empty file"), ("missing.mp4", "no such file"),
])
def test_unreadable_files_raise_decode_error_naming_the_path(video_dir, name, reason):
    with pytest.raises(DecodeError, match=reason) as info:
        open_video(video_dir / name, backend="torchcodec", fallback=False)
    assert name in str(info.value)
    with pytest.raises(DecodeError, match=name):  # PyAV cannot open them either
        open_video(video_dir / name, backend="torchcodec")
    with pytest.raises(DecodeError, match=name):  # the reader alone, without open_video's checks
        TorchCodecReader(str(video_dir / name))


@pytest.fixture
def fresh_availability():
    """Forget the cached torchcodec import before and after a test that fakes its absence."""
    tc_reader._load_decoder_class.cache_clear()
    yield
    tc_reader._load_decoder_class.cache_clear()


@pytest.mark.usefixtures("fresh_availability")
def test_missing_torchcodec_or_ffmpeg_gives_the_fix(video_dir, monkeypatch):
    import torchcodec

    monkeypatch.setattr(torchcodec, "ffmpeg_major_version", None)  # torchcodec >= 0.17 without FFmpeg
    reason = torchcodec_unavailable_reason()
    assert not torchcodec_available() and "FFmpeg" in reason
    tc_reader._load_decoder_class.cache_clear()
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # not installed
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    assert "torchcodec is not installed" in torchcodec_unavailable_reason()
    for error in [lambda: open_video(video_dir / "good.mp4", backend="torchcodec"),
                  lambda: TorchCodecReader(str(video_dir / "good.mp4")),
                  lambda: ActionDataset([], SegmentSampler(4), None, backend="torchcodec")]:
        with pytest.raises(DecodeError) as info:  # never a silent fallback to PyAV
            error()
        message = str(info.value)
        assert "torchcodec" in message and 'pip install -e ".[torchcodec]"' in message
        assert "apt-get install ffmpeg" in message and "\n" not in message


def test_import_without_torchcodec_is_silent(video_dir):
    code = (
        "import sys; sys.modules['torchcodec'] = None\n"
        "import video_attn, video_attn.data.decoders as d\n"
        "assert not d.torchcodec_available()\n"
        f"try:\n    d.open_video({str(video_dir / 'good.mp4')!r}, backend='torchcodec')\n"
        "except d.DecodeError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "torchcodec is not installed" in result.stdout


def test_config_keys():
    cfg = config_from_dict(Config().to_dict(), ["data.backend=torchcodec"])
    assert cfg.data.backend == "torchcodec" and cfg.data.decode_device == "cpu"
    ok = config_from_dict(Config().to_dict(), ["data.backend=torchcodec", "data.decode_device=cuda",
                                                "data.num_workers=0"])
    assert ok.data.decode_device == "cuda"
    with pytest.raises(ConfigError, match="data.decode_device=cuda needs data.num_workers=0"):
        config_from_dict(Config().to_dict(), ["data.backend=torchcodec", "data.decode_device=cuda"])
    with pytest.raises(ConfigError, match="needs data.backend=torchcodec"):
        config_from_dict(Config().to_dict(), ["data.decode_device=cuda", "data.num_workers=0"])
    with pytest.raises(ConfigError, match="valid choices"):
        config_from_dict(Config().to_dict(), ["data.decode_device=gpu"])


def test_dataset_item_equals_the_pyav_item(video_dir, tmp_path):
    shutil.copy(video_dir / "good.mp4", tmp_path / "good.mp4")
    (tmp_path / "val.txt").write_text("good.mp4 0\n")
    cfg = Config()
    cfg.model.num_segments, cfg.model.num_classes = 4, 3
    cfg.data.root, cfg.data.val.ann_file = str(tmp_path), "val.txt"
    cfg.data.input_size, cfg.data.scale_size = [32, 32], 36
    cfg.data.backend = "torchcodec"
    item = build_action_dataset(cfg, "val", num_classes=3)[0]
    assert item["valid"] and item["clip"].shape == (4, 3, 32, 32)
    cfg.data.backend = "pyav"
    torch.testing.assert_close(item["clip"], build_action_dataset(cfg, "val", num_classes=3)[0]["clip"],
                               rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decoding_returns_host_frames_close_to_cpu(video_dir, ground_truth):
    truth = ground_truth["good.mp4"]
    with open_video(video_dir / "good.mp4", backend="torchcodec", device="cuda") as reader:
        assert len(reader) == 40
        frames = reader.get_frames(SPARSE)
    assert isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.shape == (10, 48, 64, 3)
    # the GPU's YUV -> RGB conversion differs from FFmpeg's by a few levels
    assert np.abs(frames.astype(int) - truth[SPARSE]).mean() < 3


def test_cuda_without_a_device_is_an_error(video_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DecodeError, match="needs a CUDA device"):
        open_video(video_dir / "good.mp4", backend="torchcodec", device="cuda")
