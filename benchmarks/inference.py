#!/usr/bin/env python3
"""Throughput of ``predict_video`` and ``predict_long_video``, and the share of decoding + transforms in it.

    python benchmarks/inference.py [--device cpu|cuda|all] [--videos 4] [--rounds 2] [--seconds 4]
    python benchmarks/inference.py --depth 18 --base-width 8 --size 32 --scale 32 --height 48 --width 64 \\
        --videos 1 --rounds 1 --seconds 1 --long-windows 3        # smoke run (seconds)

Model: TANet-R50 (8 segments, ``--size`` crops after resizing the short side to ``--scale``) with random
weights, loaded by ``load_model`` from a checkpoint holding its config, as a user would. Videos: H.264 with
camera-like content (``benchmarks/decode.py``'s), ``--height`` x ``--width`` (default 256 x 340, the usual
pre-scaled Kinetics size), 30 fps, ``--seconds`` long, keyframe every ``--gop`` frames; decord decodes
(PyAV where decord is missing).

Per device and test protocol (``1x1``: 1 centre clip x 1 crop; ``30-view``: 10 clips x 3 crops, TANet's
Kinetics test):
  videos/s          ``predict_video`` per second (median time over videos x rounds);
  prepare share     ``load_video_clip`` (decode + sample + transform) time / ``predict_video`` time.
Long video (1x1): ``--long-windows`` back-to-back windows of ``--seconds`` each (so a window is one of the
videos above) through ``predict_long_video`` (``--batch-size`` windows per model call): clips/s and the ratio
to ``predict_video``'s clips/s.
Targets: prepare share <= 20% for TANet-R50 on CPU; long-video clips/s >= 90% of ``predict_video``'s.
Calls of the functions compared alternate video by video, so the load of a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

import numpy as np
import torch
from decode import make_video

from video_attn.apis import load_model, load_video_clip, predict_long_video, predict_video
from video_attn.config.loader import build_section
from video_attn.config.schema import Config
from video_attn.engine.checkpoint import atomic_save, write_json_atomic
from video_attn.models import build_model

PROTOCOLS = {"1x1": ["data.val.num_clips=1", "data.val.crop=center"],
             "30-view": ["data.val.num_clips=10", "data.val.crop=three"]}


def make_checkpoint(path: str, args: argparse.Namespace) -> None:
    """A TANet checkpoint with random weights and the config ``load_model`` rebuilds it from."""
    tree = {
        "model": {"arch": "tanet", "num_classes": 400, "num_segments": args.segments,
                  "backbone": {"depth": args.depth, "base_width": args.base_width}},
        "data": {"format": "video_list", "input_size": [args.size, args.size], "scale_size": args.scale,
                 "val": {"sampler": "tsn"}},
        "eval": {"average": "logits"},
    }
    cfg = build_section(Config, tree)
    torch.manual_seed(0)
    atomic_save({"model": build_model(cfg.model).state_dict(), "config": cfg.to_dict()}, path)


def median_times(fns: dict[str, object], items: list[str], rounds: int) -> dict[str, float]:
    """Median seconds per call of each function over ``items`` x ``rounds``, calls interleaved."""
    for fn in fns.values():
        fn(items[0])  # warm-up (allocator, cudnn, decoder libraries)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for item in items:
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(item)
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def run_device(device: str, ckpt: str, videos: list[str], long_video: str, args: argparse.Namespace) -> dict:
    result: dict = {"device": device}
    for name in args.protocols.split(","):
        overrides = PROTOCOLS[name]
        model = load_model(checkpoint=ckpt, device=device, overrides=overrides)
        fns = {
            "predict": lambda v, m=model: predict_video(m, v),
            "prepare": lambda v, m=model: load_video_clip(m.cfg, v),
        }
        median = median_times(fns, videos, args.rounds)
        share = median["prepare"] / median["predict"]
        result[name] = {"videos_per_s": 1 / median["predict"], "prepare_share": share}

    # the long video's windows are as long as the videos: the same clips, cut from one file
    model = load_model(checkpoint=ckpt, device=device, overrides=PROTOCOLS["1x1"])
    window = args.seconds
    num_windows = len(predict_long_video(model, long_video, window=window, stride=window))  # also a warm-up
    long_times, video_times = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        predict_long_video(model, long_video, window=window, stride=window, batch_size=args.batch_size)
        long_times.append(time.perf_counter() - start)
        for video in videos:
            start = time.perf_counter()
            predict_video(model, video)
            video_times.append(time.perf_counter() - start)
    clips_per_s = num_windows / float(np.median(long_times))
    result["long"] = {
        "windows": num_windows,
        "clips_per_s": clips_per_s,
        "ratio_to_predict_video": clips_per_s * float(np.median(video_times)),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                        help="all: cpu, and cuda when available")
    parser.add_argument("--videos", type=int, default=4, help="distinct videos (different content seeds)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the videos")
    parser.add_argument("--seconds", type=float, default=4.0, help="video (and long-video window) length")
    parser.add_argument("--long-windows", type=int, default=8, help="windows in the long video")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="windows per model call (long video; predict_long_video's default is 1)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS),
                        help="test protocols of predict_video to time (comma list of 1x1, 30-view)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=340)
    parser.add_argument("--gop", type=int, default=60, help="keyframe interval in frames")
    parser.add_argument("--depth", type=int, default=50, choices=(18, 34, 50, 101))
    parser.add_argument("--base-width", type=int, default=64)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="crop size")
    parser.add_argument("--scale", type=int, default=256, help="short side before cropping")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"load: {load}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; TANet-R{args.depth} width "
          f"{args.base_width}, {args.segments}x{args.size} (short side {args.scale}); videos {args.height}x"
          f"{args.width}, {args.seconds:g} s at 30 fps, GOP {args.gop}; {args.videos} videos x {args.rounds} "
          "rounds (median)")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "tanet.pt")
        make_checkpoint(ckpt, args)
        videos = []
        for i in range(args.videos):
            videos.append(os.path.join(tmp, f"video_{i}.mp4"))
            make_video(videos[-1], args.height, args.width, args.seconds, args.gop, seed=i)
        long_video = os.path.join(tmp, "long.mp4")
        make_video(long_video, args.height, args.width, args.seconds * args.long_windows, args.gop, seed=99)
        results = [run_device(d, ckpt, videos, long_video, args) for d in devices]
    print()
    print("| device | protocol | videos/s | decode + transforms share |")
    print("|---|---|---|---|")
    for r in results:
        for name in args.protocols.split(","):
            row = r[name]
            share = 100 * row["prepare_share"]
            print(f"| {r['device']} | {name} | {row['videos_per_s']:.2f} | {share:.1f}% |")
    print()
    for r in results:
        long = r["long"]
        print(f"{r['device']}: long video, {long['windows']} windows of {args.seconds:g} s: "
              f"{long['clips_per_s']:.2f} clips/s = {100 * long['ratio_to_predict_video']:.0f}% of "
              f"predict_video's clip throughput (target >= 90%)")
        if "1x1" in r:
            print(f"{r['device']}: 1x1 prepare share {100 * r['1x1']['prepare_share']:.1f}% "
                  "(target <= 20% for TANet-R50 on CPU)")
    if args.json:
        write_json_atomic(args.json, {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
