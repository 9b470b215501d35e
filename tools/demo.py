#!/usr/bin/env python3
"""Name the actions in a video with a trained model (the counterpart of mmaction2's demo/demo.py).

    python tools/demo.py [CONFIG] INPUT --checkpoint CKPT [--topk 5] [--window S [--stride S]] [--fps F]
                         [--json OUT.json] [--out-video OUT.mp4] [--device auto] [KEY=VALUE ...]

CONFIG is optional: without it the config stored in the checkpoint is used (overrides apply to either).
INPUT is a video file, a frame folder (frames named by data.frame_template), or a folder of videos and frame
folders: one line per video, "PATH: name probability, name probability, ...". The test protocol of the
config (sampler, clips, crops, view averaging) decides what the model sees.

--window S: predict windows of S seconds every --stride seconds (default: S) along each video, for videos
longer than one clip; prints the timeline and saves it (--json, default ./<INPUT name>_timeline.json).
--out-video: INPUT (one video) with the current top-k drawn on every frame, H.264 with the same frame count
and rate. --json: everything printed, as JSON. Exit status: 0; 1 after a one-line error on bad input (a
folder's other videos are still predicted).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from _cli import load_cli_config

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}  # --out-video suffix -> PyAV format
OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Predict the action classes of a video (or of each window of a long video).",
        epilog="Example: python tools/demo.py data/synthetic_action/videos/val_00000.mp4 "
        "--checkpoint work_dirs/synthetic/tanet_r18/checkpoints/best.pt",
    )
    p.add_argument("paths", nargs="+", metavar="[CONFIG] INPUT [KEY=VALUE ...]",
                   help="optional config (default: the checkpoint's), the video / folder, dotted overrides")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) of tools/train.py")
    p.add_argument("--topk", type=int, default=5, help="classes to report (default 5)")
    p.add_argument("--window", type=float, default=None, help="window length in seconds (long videos)")
    p.add_argument("--stride", type=float, default=None, help="seconds between windows (default: --window)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="windows per model call (default 1, best on a CPU; 8 or more on a GPU)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate: needed by frame folders with --window (they carry none; --out-video "
                   "takes 25); for a video file it replaces the container's")
    p.add_argument("--json", default=None, help="write the predictions to this JSON file")
    p.add_argument("--out-video", default=None, help="INPUT with the top-k drawn on it (.mp4, .mov, .mkv)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    args = p.parse_intermixed_args(argv)
    args.overrides = [a for a in args.paths if OVERRIDE.match(a) and not os.path.exists(a)]
    paths = [a for a in args.paths if a not in args.overrides]
    if len(paths) not in (1, 2):
        p.error(f"expected [CONFIG] INPUT, got {len(paths)} paths: {' '.join(paths)}")
    args.config, args.input = (None, paths[0]) if len(paths) == 1 else paths
    if args.stride is not None and args.window is None:
        p.error("--stride needs --window")
    if args.topk < 1 or args.batch_size < 1:
        p.error("--topk and --batch-size must be >= 1")
    if args.out_video and Path(args.out_video).suffix.lower() not in CONTAINERS:
        p.error(f"--out-video must end in {', '.join(CONTAINERS)}")
    return args


def list_inputs(path: str, frame_template: str) -> list[str]:
    """``path`` itself (a video file or a frame folder), or the videos and frame folders inside it."""
    first_frame = frame_template.format(1)
    if os.path.isfile(path) or os.path.isfile(os.path.join(path, first_frame)):
        return [path]
    found = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full) and Path(name).suffix.lower() in VIDEO_SUFFIXES:
            found.append(full)
        elif os.path.isfile(os.path.join(full, first_frame)):
            found.append(full)
    if not found:
        raise ValueError(f"{path}: no video files ({', '.join(VIDEO_SUFFIXES)}) or frame folders in it")
    return found


def format_topk(topk: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {prob:.3f}" for name, prob in topk)


def as_json(topk: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"class": name, "probability": prob} for name, prob in topk]


# ----------------------------------------------------------------------------------- annotated video
def iter_frames(path: str, frame_template: str, fps: float | None) -> tuple[Iterator[Any], Fraction, int]:
    """The frames of a video file or frame folder in order (uint8 RGB), its frame rate and frame count."""
    import av

    from video_attn.data.decoders import FrameFolderReader

    if os.path.isdir(path):
        reader = FrameFolderReader(path, template=frame_template)
        chunk = 32

        def folder_frames() -> Iterator[Any]:
            for start in range(0, reader.num_frames, chunk):
                yield from reader.get_frames(range(start, min(start + chunk, reader.num_frames)))

        return folder_frames(), Fraction(fps or 25).limit_denominator(1001), reader.num_frames

    container = av.open(path)
    stream = container.streams.video[0]
    rate = Fraction(fps).limit_denominator(1001) if fps else stream.average_rate or stream.guessed_rate

    def video_frames() -> Iterator[Any]:
        with container:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")

    return video_frames(), rate, int(stream.frames or 0)


def draw_lines(frame: Any, lines: list[str], font: Any) -> Any:
    """``frame`` with ``lines`` written top left, white on black boxes, padded to even sizes (yuv420p)."""
    import numpy as np
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    y = 2
    for line in lines:
        box = draw.textbbox((3, y), line, font=font)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((3, y), line, fill=(255, 255, 255), font=font)
        y = box[3] + 2
    out = np.asarray(image)
    pad = ((0, out.shape[0] % 2), (0, out.shape[1] % 2), (0, 0))
    return np.pad(out, pad, mode="edge") if any(p[1] for p in pad[:2]) else out


def write_annotated_video(
    source: str, out: str, labels_at: Callable[[float], list[tuple[str, float]]], frame_template: str,
    fps: float | None, progress: bool,
) -> int:
    """Re-encode ``source`` with ``labels_at(seconds)`` drawn on each frame; returns the frame count."""
    from PIL import ImageFont
    from tqdm import tqdm

    from video_attn.data.synthetic.action import write_h264
    from video_attn.engine.checkpoint import atomic_write

    frames, rate, total = iter_frames(source, frame_template, fps)
    font_cache: dict[int, Any] = {}

    def annotated() -> Iterator[Any]:
        bar = tqdm(frames, total=total or None, desc="video", unit="frame", delay=1.0, disable=not progress)
        for i, frame in enumerate(bar):
            size = max(10, frame.shape[0] // 20)
            if size not in font_cache:
                font_cache[size] = ImageFont.load_default(size=size)
            lines = [f"{name} {prob:.2f}" for name, prob in labels_at(i / float(rate))]
            yield draw_lines(frame, lines, font_cache[size])

    container_format = CONTAINERS[Path(out).suffix.lower()]
    count = 0

    def encode(f: Any) -> None:
        nonlocal count
        count = write_h264(f, annotated(), fps=rate, crf=20, container_format=container_format)

    atomic_write(out, encode)
    return count


def timeline_lookup(timeline: list[Any]) -> Callable[[float], list[tuple[str, float]]]:
    """The top-k of the window whose centre is nearest to a time (seconds)."""
    centres = [(w.start + w.end) / 2 for w in timeline]

    def at(t: float) -> list[tuple[str, float]]:
        nearest = min(range(len(timeline)), key=lambda i: abs(centres[i] - t))
        return timeline[nearest].topk

    return at


# ------------------------------------------------------------------------------------------------ main
def error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.path.exists(args.input):
        return error(f"{args.input}: no such video file or folder")
    from tqdm import tqdm

    from video_attn.apis import load_model, predict_long_video, predict_video
    from video_attn.data.decoders import DecodeError
    from video_attn.engine.checkpoint import CheckpointError, write_json_atomic
    from video_attn.tasks import build_task

    config, overrides = None, args.overrides
    if args.config is not None:
        config, overrides = load_cli_config(args.config, args.overrides, args.checkpoint), []
        if config is None:
            return 1
    try:
        model = load_model(config, args.checkpoint, device=args.device, overrides=overrides)
    except (CheckpointError, ValueError, FileNotFoundError, RuntimeError) as exc:
        return error(str(exc))
    cfg = model.cfg
    if build_task(cfg).name != "action":
        return error(
            f"{args.checkpoint} is a {cfg.model.arch} ReID model; tools/demo.py names action classes (embed "
            "tracklets with video_attn.apis.embed_many or tools/extract_features.py)"
        )
    try:
        videos = list_inputs(args.input, cfg.data.frame_template)
    except (ValueError, OSError) as exc:
        return error(str(exc))
    if args.out_video and len(videos) != 1:
        return error(f"--out-video takes one video; {args.input} holds {len(videos)}")

    tty = sys.stderr.isatty()
    stride = args.stride or args.window
    results: list[dict[str, Any]] = []
    failed = 0
    for video in tqdm(videos, desc="videos", unit="video", delay=1.0, disable=not tty or len(videos) < 2):
        try:
            if args.window is None:
                topk = predict_video(model, video, args.topk)
                tqdm.write(f"{video}: {format_topk(topk)}", file=sys.stdout)
                results.append({"path": video, "predictions": as_json(topk)})
                labels_at = lambda t, topk=topk: topk  # the same classes on every frame
            else:
                timeline = predict_long_video(
                    model, video, args.window, stride, args.topk, args.batch_size, args.fps, progress=tty
                )
                tqdm.write(f"{video}:", file=sys.stdout)
                for w in timeline:
                    tqdm.write(f"  {w.start:8.2f}-{w.end:.2f} s  {format_topk(w.topk)}", file=sys.stdout)
                windows = [{"start": w.start, "end": w.end, "predictions": as_json(w.topk)} for w in timeline]
                results.append({"path": video, "window": args.window, "stride": stride, "timeline": windows})
                labels_at = timeline_lookup(timeline)
            if args.out_video:
                count = write_annotated_video(
                    video, args.out_video, labels_at, cfg.data.frame_template, args.fps, progress=tty
                )
                print(f"wrote {args.out_video} ({count} frames)", file=sys.stderr)
        except (DecodeError, ValueError, OSError) as exc:
            failed += 1
            error(str(exc) if str(exc).startswith(video) else f"{video}: {exc}")
            results.append({"path": video, "error": str(exc)})

    out_json = args.json
    if out_json is None and args.window is not None:
        out_json = f"{Path(args.input.rstrip(os.sep)).stem}_timeline.json"
    if out_json is not None:
        config_name = args.config or f"{args.checkpoint} (stored config)"
        write_json_atomic(out_json, {"checkpoint": args.checkpoint, "config": config_name, "videos": results})
        print(f"wrote {out_json}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
