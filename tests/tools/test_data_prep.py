"""The dataset preparation tools end to end: tools/build_list.py, resize_videos.py, extract_frames.py and
check_videos.py on tiny generated trees (H.264 videos of 32-64 px and a few dozen frames)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import video_attn.data.decoders as decoders
from video_attn.data.datasets.frame_list import read_frame_list
from video_attn.data.datasets.video_list import read_video_list
from video_attn.data.decoders import decord_available, open_video
from video_attn.data.synthetic.action import write_h264

REPO = Path(__file__).resolve().parents[2]


def frames(num: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frames with a bar moving one step a frame over blocky noise (so every frame differs)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 220, (height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    out = np.repeat(base[None], num, axis=0)
    for t in range(num):
        out[t, :, (2 * t) % width:(2 * t) % width + 4] = 255
    return out


def probe(path: Path) -> tuple[int, int, float, int]:
    """(width, height, fps, decoded frame count) of a video."""
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return stream.codec_context.width, stream.codec_context.height, float(stream.average_rate), count


def write_truncated(path: Path, num: int = 30) -> None:
    """A faststart MP4 (index first) cut at 60%: it opens, and its tail is missing."""
    full = path.with_name("full_" + path.name)
    with av.open(os.fspath(full), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.codec_context.gop_size = 8
        for frame in frames(num, 32, 48, seed=9):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    full.unlink()


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory) -> Path:
    """SRC/jump/a.mp4 (64x48, 24 frames, 25 fps), SRC/jump/b.avi (48x64, 20 frames, 12 fps),
    SRC/run/deep/c.mkv (32x32, 16 frames), SRC/run/broken.mp4 (garbage)."""
    root = tmp_path_factory.mktemp("videos")
    (root / "jump").mkdir()
    (root / "run" / "deep").mkdir(parents=True)
    write_h264(root / "jump" / "a.mp4", frames(24, 48, 64, 1), fps=25)
    write_h264(root / "jump" / "b.avi", frames(20, 64, 48, 2), fps=12)
    write_h264(root / "run" / "deep" / "c.mkv", frames(16, 32, 32, 3), fps=25)
    (root / "run" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    return root


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


# --- build_list.py ---------------------------------------------------------------------------------------

def make_class_tree(root: Path, counts: dict[str, int], frames_per_folder: int | None = None) -> None:
    """Empty placeholder videos (build_list does not decode), or frame folders of placeholder JPEGs."""
    for name, count in counts.items():
        for i in range(count):
            if frames_per_folder is None:
                path = root / name / f"v{i}.mp4"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x")
            else:
                folder = root / name / f"v{i}"
                folder.mkdir(parents=True)
                for j in range(1, frames_per_folder + i + 1):
                    (folder / f"img_{j:05d}.jpg").write_bytes(b"x")


def test_build_list_class_tree(load_tool, tmp_path, capsys):
    tool = load_tool("build_list")
    root = tmp_path / "ds"
    make_class_tree(root, {"walk": 5, "jump": 4, "swim": 1})
    (root / "walk" / "notes.txt").write_text("not a video")
    (root / "walk" / ".v9.mp4.part").write_bytes(b"x")  # an unfinished resize output
    assert tool.main(["tree", str(root), "--no-progress"]) == 0
    assert (root / "classes.txt").read_text() == "jump\nswim\nwalk\n"
    lines = (root / "list.txt").read_text().splitlines()
    assert len(lines) == 10 and lines[0] == "jump/v0.mp4 0" and lines[-1] == "walk/v4.mp4 2"
    # the training parser reads it back, paths relative to data.root
    records = read_video_list(str(root / "list.txt"), str(root), num_classes=3)
    assert len(records) == 10 and all(Path(r.path).parent.name == ["jump", "swim", "walk"][r.label]
                                      for r in records)
    assert "wrote" in capsys.readouterr().out

    out = tmp_path / "split"
    split = ["--val-fraction", "0.25", "--no-progress"]
    assert tool.main(["tree", str(root), "--out-dir", str(out), "--seed", "3", *split]) == 0
    train, val = ((out / f"{s}.txt").read_text().splitlines() for s in ("train", "val"))
    assert sorted(train + val) == sorted(lines)  # a partition of the whole list
    per_class = {c: sum(line.startswith(c) for line in val) for c in ("walk", "jump", "swim")}
    assert per_class == {"walk": 1, "jump": 1, "swim": 0}  # round(0.25 n), >= 1, never a class's only video
    assert (out / "classes.txt").read_text() == "jump\nswim\nwalk\n"
    # deterministic for a seed, different for another
    again = tmp_path / "again"
    assert tool.main(["tree", str(root), "--out-dir", str(again), "--seed", "3", *split]) == 0
    assert (again / "val.txt").read_text() == (out / "val.txt").read_text()
    vals = set()
    for seed in range(6):
        tool.main(["tree", str(root), "--out-dir", str(again), "--seed", str(seed), *split])
        vals.add((again / "val.txt").read_text())
    assert len(vals) > 1


def test_build_list_frames(load_tool, tmp_path):
    tool = load_tool("build_list")
    root = tmp_path / "frames"
    make_class_tree(root, {"b": 2, "a": 1}, frames_per_folder=3)
    (root / "a" / "empty").mkdir()  # no frames: skipped with a warning
    assert tool.main(["tree", str(root), "--frames", "--name", "all", "--no-progress"]) == 0
    assert (root / "all.txt").read_text().splitlines() == ["a/v0 3 0", "b/v0 3 1", "b/v1 4 1"]
    records = read_frame_list(str(root / "all.txt"), str(root))
    assert [r.num_frames for r in records] == [3, 3, 4]


def test_build_list_bad_input(load_tool, tmp_path, capsys):
    tool = load_tool("build_list")
    assert tool.main(["tree", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "no such directory" in err
    assert tool.main(["tree", str(tmp_path)]) == 1  # no class folders
    assert "no class folders" in capsys.readouterr().err
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.txt").write_text("x")
    assert tool.main(["tree", str(tmp_path), "--no-progress"]) == 1
    assert "no videos" in capsys.readouterr().err
    bad_csv = tmp_path / "k.csv"
    bad_csv.write_text("label,youtube_id,time_start,split\nabseiling,abc,0,train\n")
    assert tool.main(["kinetics", str(bad_csv), "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "k.csv:1" in err and "time_end" in err


def test_build_list_kinetics(load_tool, tmp_path, capsys):
    tool = load_tool("build_list")
    root = tmp_path / "k400"
    rows = [("riding a bike", "aaa", 10, 20), ("abseiling", "bbb", 0, 10), ("zumba", "ccc", 5, 15),
            ("abseiling", "ddd", 30, 40), ("zumba", "eee", 1, 11), ("riding a bike", "fff", 2, 12)]
    present = {"aaa": "flat", "bbb": "class", "ccc": "flat", "fff": "class"}  # ddd, eee missing
    for label, yid, start, end in rows:
        name = f"{yid}_{start:06d}_{end:06d}.mp4"
        if yid in present:
            folder = root / "train" / (label if present[yid] == "class" else "")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"x")
    csv_file = tmp_path / "kinetics400_train.csv"
    csv_file.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                        + "".join(f"{lab},{yid},{s},{e},train,0\n" for lab, yid, s, e in rows))
    out = tmp_path / "lists" / "train.txt"
    assert tool.main(["kinetics", str(csv_file), "--root", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 missing videos" in printed
    classes = ["abseiling", "riding a bike", "zumba"]  # sorted: the kinetics loader's order
    assert (out.parent / "classes.txt").read_text().splitlines() == classes
    assert out.read_text().splitlines() == [
        "train/aaa_000010_000020.mp4 1", "train/abseiling/bbb_000000_000010.mp4 0",
        "train/ccc_000005_000015.mp4 2", "train/riding a bike/fff_000002_000012.mp4 1"]
    missing = (out.parent / "train.missing.txt").read_text().splitlines()
    assert len(missing) == 2
    assert missing[0].startswith(f"{csv_file}:5 ") and "ddd_000030_000040" in missing[0]
    assert missing[1].startswith(f"{csv_file}:6 ") and "eee_000001_000011" in missing[1]
    assert len(read_video_list(str(out), str(root), num_classes=3)) == 4


# --- resize_videos.py ------------------------------------------------------------------------------------

def test_resize_videos_and_resume(load_tool, video_tree, tmp_path, capsys):
    tool = load_tool("resize_videos")
    dst = tmp_path / "out"
    # an interrupted earlier run: a finished output (kept), a half-written temporary file (redone)
    (dst / "jump").mkdir(parents=True)
    (dst / "jump" / "a.mp4").write_bytes(b"finished before")
    (dst / "run" / "deep").mkdir(parents=True)
    (dst / "run" / "deep" / ".c.mkv.part").write_bytes(b"half written")
    status = tool.main([str(video_tree), str(dst), "--short-side", "32", "--workers", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 1  # broken.mp4
    assert "1 resized" in out and "1 already done" in out and "1 failed" in out
    assert "run/broken.mp4:" in out
    assert (dst / "jump" / "a.mp4").read_bytes() == b"finished before"  # skipped, not redone
    # .avi cannot keep its name (written as H.264 MP4): resized 48x64 -> 32x42 (aspect kept, even), 12 fps
    assert not (dst / "jump" / "b.avi").exists()
    assert probe(dst / "jump" / "b.mp4") == (32, 42, 12.0, 20)
    # already at the short side: copied unchanged; the half-written temporary file is gone
    source = video_tree / "run" / "deep" / "c.mkv"
    assert (dst / "run" / "deep" / "c.mkv").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dst.rglob("*")) == ["a.mp4", "b.mp4", "c.mkv", "deep", "jump", "run"]

    # a fresh run in a pool of 2 processes, then a rerun that has nothing left to do
    fresh = tmp_path / "fresh"
    result = run_tool("tools/resize_videos.py", str(video_tree), str(fresh), "--short-side", "32",
                      "--workers", "2")
    assert result.returncode == 1 and "2 resized, 1 copied" in result.stdout, result.stderr
    assert "resizing" in result.stderr  # progress bar
    assert probe(fresh / "jump" / "a.mp4") == (42, 32, 25.0, 24)
    rerun = run_tool("tools/resize_videos.py", str(video_tree), str(fresh), "--short-side", "32",
                     "--workers", "2", "--no-progress")
    assert "0 resized, 0 copied" in rerun.stdout and "3 already done" in rerun.stdout


# --- extract_frames.py -----------------------------------------------------------------------------------

def test_extract_frames_and_resume(load_tool, video_tree, tmp_path, capsys):
    tool = load_tool("extract_frames")
    dst = tmp_path / "frames"
    (dst / "jump" / "a").mkdir(parents=True)
    (dst / "jump" / "a" / "img_00001.jpg").write_bytes(b"finished before")  # a complete folder: skipped
    (dst / "jump" / ".b.part").mkdir()
    (dst / "jump" / ".b.part" / "img_00001.jpg").write_bytes(b"interrupted")  # redone from scratch
    list_file = dst / "frames.txt"
    status = tool.main([str(video_tree), str(dst), "--workers", "1", "--short-side", "32", "--no-progress",
                        "--list", str(list_file)])
    out = capsys.readouterr().out
    assert status == 1 and "2 extracted, 1 already done, 1 failed" in out and "run/broken.mp4:" in out
    assert not (dst / "jump" / ".b.part").exists()
    b_frames = sorted(p.name for p in (dst / "jump" / "b").iterdir())
    assert b_frames[0] == "img_00001.jpg" and b_frames[-1] == "img_00020.jpg" and len(b_frames) == 20
    with open_video(dst / "jump" / "b", backend="frames") as reader:  # numbered from 1, as the reader reads
        assert len(reader) == 20 and reader.get_frames([0]).shape == (1, 42, 32, 3)
    assert not (dst / "run" / "broken").exists()
    assert list_file.read_text().splitlines() == ["jump/a 1 0", "jump/b 20 0", "run/deep/c 16 1"]
    assert (dst / "classes.txt").read_text() == "jump\nrun\n"
    assert len(read_frame_list(str(list_file), str(dst))) == 3
    # a rerun skips everything
    assert tool.main([str(video_tree), str(dst), "--workers", "1", "--no-progress"]) == 1
    assert "0 extracted, 3 already done" in capsys.readouterr().out


# --- check_videos.py -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def check_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("check")
    write_h264(root / "good.mp4", frames(24, 32, 48, 4))
    write_h264(root / "short.mp4", frames(4, 32, 48, 5))
    write_truncated(root / "truncated.mp4")
    (root / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(4096))
    (root / "clip").mkdir()
    for i, frame in enumerate(frames(5, 32, 32, 6), 1):
        Image.fromarray(frame).save(root / "clip" / f"img_{i:05d}.jpg")
    return root


def test_check_videos_all_good(load_tool, check_dir, tmp_path, capsys):
    tool = load_tool("check_videos")
    ann = tmp_path / "ok.txt"
    ann.write_text("# comment\ngood.mp4 0\nshort.mp4 1\n")
    assert tool.main([str(ann), "--root", str(check_dir), "--backend", "pyav", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == "all 2 videos OK"


def test_check_videos_reports_every_problem(load_tool, check_dir, tmp_path, capsys):
    tool = load_tool("check_videos")
    ann = tmp_path / "bad.txt"
    ann.write_text("good.mp4 0\n"        # 1 fine
                   "good.mp4\n"          # 2 missing label
                   "good.mp4 one\n"      # 3 non-integer label
                   "missing.mp4 1\n"     # 4 missing file
                   "truncated.mp4 1\n"   # 5 truncated
                   "short.mp4 2\n"       # 6 too short for --min-frames 8
                   "garbage.mp4 0\n")    # 7 undecodable
    status = tool.main([str(ann), "--root", str(check_dir), "--backend", "pyav", "--min-frames", "8",
                        "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert out[-1] == ("6 of 7 videos bad (malformed lines: 2, missing files: 1, too short: 1, truncated: 1, "
                       "undecodable: 1)")
    assert any(line.startswith(f"{ann}:2: malformed line") and "'good.mp4'" in line for line in out)
    assert any(line.startswith(f"{ann}:3: malformed line") and "'good.mp4 one'" in line for line in out)
    assert f"{check_dir / 'missing.mp4'}: missing file ({ann}:4)" in out
    assert any(line.startswith(f"{check_dir / 'truncated.mp4'}: truncated") and line.endswith(f"({ann}:5)")
               for line in out)
    assert any(line.startswith(f"{check_dir / 'short.mp4'}: too short: 4 frames") for line in out)
    assert any(line.startswith(f"{check_dir / 'garbage.mp4'}: ") for line in out)


def test_check_videos_frame_list_and_labels(load_tool, check_dir, tmp_path, capsys):
    tool = load_tool("check_videos")
    ann = tmp_path / "frames.txt"
    ann.write_text("clip 5 0\nclip 5x 0\nclip 9 1\nclip 5 3\n")
    labels = tmp_path / "classes.txt"
    labels.write_text("a\nb\nc\n")
    status = tool.main([str(ann), "--root", str(check_dir), "--format", "frame_list", "--labels-file",
                        str(labels), "--no-progress"])
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert any(line.startswith(f"{ann}:2: malformed line") for line in out)  # non-integer frame count
    assert any(line.startswith(f"{ann}:4: label out of range") for line in out)  # 3 classes
    assert any("list says 9 frames, folder has 5" in line and line.endswith(f"({ann}:3)") for line in out)
    assert out[-1] == "3 of 4 videos bad (labels out of range: 1, malformed lines: 1, truncated: 1)"


def test_check_videos_empty_list(load_tool, tmp_path, capsys):
    tool = load_tool("check_videos")
    ann = tmp_path / "empty.txt"
    ann.write_text("# nothing here\n\n")
    assert tool.main([str(ann), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(ann) in err and "empty" in err


def test_check_videos_backends_follow_the_decoders(load_tool, monkeypatch):
    monkeypatch.setattr(decoders, "BACKENDS", (*decoders.BACKENDS, "torchcodec"))
    tool = load_tool("check_videos")
    assert "frames" not in tool.VIDEO_BACKENDS and "pyav" in tool.VIDEO_BACKENDS
    assert tool.parse_args(["x.txt", "--backend", "torchcodec"]).backend == "torchcodec"


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_check_videos_keeps_decoder_noise_off_stderr(load_tool, check_dir, tmp_path, capfd, backend):
    if backend == "decord" and not decord_available():
        pytest.skip("decord not installed")
    tool = load_tool("check_videos")
    ann = tmp_path / "noisy.txt"
    ann.write_text("truncated.mp4 0\ngarbage.mp4 0\n")
    # the premise: these files make the native decoders write to fd 2 when nothing silences them
    if backend == "decord":
        tool.check_one(str(check_dir / "garbage.mp4"), "decord", None, "img_{:05d}.jpg", False)
        assert "video_reader" in capfd.readouterr().err
    assert tool.main([str(ann), "--root", str(check_dir), "--backend", backend]) == 1
    captured = capfd.readouterr()
    assert "2 of 2 videos bad" in captured.out
    noise = [line for line in captured.err.replace("\r", "\n").splitlines()
             if line.strip() and not line.startswith("checking")]
    assert noise == [], noise
    assert "checking" in captured.err  # the tool's own progress bar still shows
