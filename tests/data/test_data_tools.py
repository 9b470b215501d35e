"""tools/make_synthetic.py and tools/check_videos.py end to end, and the synthetic data's motion property."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from video_attn.data.decoders import open_video
from video_attn.data.synthetic.action import CLASS_NAMES, MotionStyle, render_moving_object

REPO = Path(__file__).resolve().parents[2]


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def object_track(frames: np.ndarray) -> np.ndarray:
    """Per-frame (row, col) displacement of the object on the torus, accumulated from frame 0."""
    background = np.median(frames, axis=0)  # the object covers any pixel in only a few frames
    masks = np.abs(frames.astype(int) - background).sum(-1) > 0
    size = frames.shape[1]
    angles = 2 * np.pi * np.arange(size) / size
    centres = []
    for mask in masks:
        rows, cols = mask.sum(1), mask.sum(0)
        phase = np.exp(1j * angles)
        centres.append([np.angle((rows * phase).sum()), np.angle((cols * phase).sum())])
    steps = np.angle(np.exp(1j * np.diff(np.asarray(centres), axis=0)))  # wrapped step in (-pi, pi]
    return np.cumsum(steps, axis=0) * size / (2 * np.pi)


@pytest.mark.parametrize("label", range(4))
def test_object_moves_over_half_the_frame_in_its_direction(label):
    frames = render_moving_object(np.random.default_rng(label), label, 16, size=64)
    total = object_track(frames)[-1]  # (rows, cols) travelled
    direction = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}[label]
    along = total @ np.asarray(direction)
    across = abs(total @ np.asarray(direction[::-1]))
    assert along >= 0.5 * 64 and across < 3


def test_single_frame_statistics_do_not_depend_on_class():
    # The object's position in one frame is uniform for every class: compare the mean object column of
    # frame 0 and of the last frame over many videos per class (a class signal would shift them).
    size, means = 32, []
    for label in range(4):
        cols = []
        for seed in range(60):
            frames = render_moving_object(np.random.default_rng([label, seed]), label, 8, size=size)
            background = np.median(frames, axis=0)
            for t in (0, 7):
                mask = np.abs(frames[t].astype(int) - background).sum(-1) > 0
                cols.append((t, np.exp(2j * np.pi * np.nonzero(mask)[1] / size).mean()))
        for t in (0, 7):
            values = np.asarray([c for tt, c in cols if tt == t])
            means.append(abs(values.mean()))  # ~0 when positions are uniform on the circle
    assert max(means) < 0.3


def test_make_synthetic_action_end_to_end(tmp_path):
    out = tmp_path / "syn"
    tiny = ["--seed", "3", "--train-per-class", "2", "--val-per-class", "1", "--min-frames", "8",
            "--max-frames", "10", "--size", "32"]
    result = run_tool("tools/make_synthetic.py", "action", "--out", str(out), *tiny)
    assert result.returncode == 0, result.stderr
    assert "8 train, 4 val" in result.stdout
    assert (out / "classes.txt").read_text().split() == list(CLASS_NAMES[:4])
    train = [line.split() for line in (out / "train.txt").read_text().splitlines()]
    assert len(train) == 8 and sorted(int(label) for _, label in train) == [0, 0, 1, 1, 2, 2, 3, 3]
    for rel, _ in train:
        assert rel.startswith("videos/") and rel.endswith(".mp4")
        with open_video(out / rel) as reader:
            assert 8 <= len(reader) <= 10 and reader.get_frames([0]).shape == (1, 32, 32, 3)
    # deterministic under the seed
    again = tmp_path / "again"
    assert run_tool("tools/make_synthetic.py", "action", "--out", str(again), *tiny).returncode == 0
    name = "videos/train_00003.mp4"
    assert (out / name).read_bytes() == (again / name).read_bytes()
    bad = run_tool("tools/make_synthetic.py", "action", "--out", str(tmp_path / "x"), "--size", "33")
    assert bad.returncode == 1 and "even" in bad.stderr
    assert run_tool("tools/make_synthetic.py", "--help").returncode == 0


def test_check_videos_end_to_end(video_dir, tmp_path):
    for name in ("good.mp4", "short.mp4", "garbage.mp4", "empty.mp4", "truncated.mp4"):
        shutil.copy(video_dir / name, tmp_path / name)
    (tmp_path / "good.txt").write_text("good.mp4 0\nshort.mp4 1\n")
    ok = run_tool("tools/check_videos.py", str(tmp_path / "good.txt"), "--root", str(tmp_path),
                  "--no-progress")
    assert ok.returncode == 0 and "all 2 videos OK" in ok.stdout
    (tmp_path / "all.txt").write_text(
        "good.mp4 0\ngarbage.mp4 1\nempty.mp4 1\nmissing.mp4 0\ntruncated.mp4 2\n")
    bad = run_tool("tools/check_videos.py", str(tmp_path / "all.txt"), "--root", str(tmp_path),
                   "--backend", "pyav")
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert "4 of 5 videos bad" in lines[-1]
    flagged = {Path(line.split(":")[0]).name for line in lines[:-1]}
    assert flagged == {"garbage.mp4", "empty.mp4", "missing.mp4", "truncated.mp4"}
    assert any("truncated.mp4" in line and "truncated" in line.split(":", 1)[1] for line in lines)
    assert "checking" in bad.stderr  # progress bar


@pytest.mark.parametrize("label", range(8))
def test_straight_trajectory_stays_in_frame_and_moves_in_its_direction(label):
    style = MotionStyle(shape="disc", object_size=(12, 20), trajectory="straight", travel=(0.45, 0.55),
                        background="uniform")
    frames = render_moving_object(np.random.default_rng(label), label, 24, size=64, style=style)
    background = frames[0, 0, 0] if (frames[:, 0, 0] == frames[0, 0, 0]).all() else frames[0, -1, -1]
    masks = (frames != background).any(-1)
    centres = []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        assert 100 < mask.sum() < 20 * 20  # the whole disc in every frame
        # no wrap-around: the object is one blob, never split over opposite edges
        assert rows.max() - rows.min() < 20 and cols.max() - cols.min() < 20
        centres.append((rows.mean(), cols.mean()))
    dy, dx = [(0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1)][label]
    travel = np.asarray(centres[-1]) - np.asarray(centres[0])
    assert travel[0] * dy >= 0.4 * 64 * abs(dy) and travel[1] * dx >= 0.4 * 64 * abs(dx)
    assert (dy != 0 or abs(travel[0]) < 2) and (dx != 0 or abs(travel[1]) < 2)  # straight along its axis


def test_noise_background_is_static_per_pixel_noise():
    style = MotionStyle(background="noise", object_texture="noise", trajectory="straight")
    frames = render_moving_object(np.random.default_rng(0), 1, 16, size=64, style=style).astype(int)
    static = (frames == frames[0]).all(0)  # pixels the object never covers
    assert static.mean() > 0.3 and frames[0][static].std() > 10


def test_motion_style_rejects_unknown_values():
    with pytest.raises(ValueError, match="trajectory"):
        MotionStyle(trajectory="zigzag")
    with pytest.raises(ValueError, match="travel"):
        MotionStyle(travel=(0.9, 0.5))
