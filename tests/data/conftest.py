"""Session fixtures for the data tests: tiny H.264 files (good, truncated, garbage, empty), frame folders."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from video_attn.data.synthetic.action import write_h264

NUM_FRAMES = 40
HEIGHT, WIDTH = 48, 64


def make_frames(num_frames: int = NUM_FRAMES, height: int = HEIGHT, width: int = WIDTH,
                seed: int = 0) -> np.ndarray:
    """Frames that differ from each other: a smooth background plus a bar that moves one column a frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    frames = np.repeat(base[None], num_frames, axis=0)
    for t in range(num_frames):
        frames[t, :, (2 * t) % width:(2 * t) % width + 6] = (255, 255 - 5 * t % 256, 20)
    return frames


def decode_all(path: str | os.PathLike) -> np.ndarray:
    """Ground truth: every frame, decoded sequentially by PyAV."""
    with av.open(os.fspath(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """good.mp4 (40 frames, GOP 8, B-frames), short.mp4 (5 frames), truncated.mp4 (faststart, cut at 60%),
    truncated_moov.mp4 (moov at the end, cut: unopenable), garbage.mp4, empty.mp4."""
    root = tmp_path_factory.mktemp("videos")
    write_h264(root / "good.mp4", make_frames(), gop=8)
    write_h264(root / "short.mp4", make_frames(5, seed=1), gop=8)
    write_h264(root / "other.mp4", make_frames(24, seed=2), gop=8)
    # faststart puts the index first, so a cut file still opens and its tail is missing
    frames = make_frames(seed=3)
    with av.open(os.fspath(root / "full_faststart.mp4"), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = 8
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = (root / "full_faststart.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: int(len(data) * 0.6)])
    good = (root / "good.mp4").read_bytes()
    (root / "truncated_moov.mp4").write_bytes(good[: len(good) // 2])
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)
    (root / "garbage.mp4").write_bytes(noise.tobytes())
    (root / "empty.mp4").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def frame_dir(tmp_path_factory) -> Path:
    """Frame folders root/a (12 PNG frames img_00001.png ...) and root/b (6 frames)."""
    root = tmp_path_factory.mktemp("frames")
    for name, count, seed in (("a", 12, 4), ("b", 6, 5)):
        (root / name).mkdir()
        for i, frame in enumerate(make_frames(count, 32, 40, seed=seed), 1):
            Image.fromarray(frame).save(root / name / f"img_{i:05d}.png")
    return root


@pytest.fixture(scope="session")
def ground_truth(video_dir) -> dict[str, np.ndarray]:
    """Sequentially decoded frames of the good files, by file name."""
    return {name: decode_all(video_dir / name) for name in ("good.mp4", "short.mp4", "other.mp4")}


@pytest.fixture(scope="session")
def frame_maker():
    """The frame generator, for tests that build their own videos."""
    return make_frames
