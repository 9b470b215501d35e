#!/usr/bin/env python3
"""Write a small synthetic dataset in the real on-disk formats.

    python tools/make_synthetic.py action --out data/synthetic_action [--seed 0]
    python tools/make_synthetic.py action --out data/straight_noise --shape disc --object-size 12 20 \
        --trajectory straight --travel 0.45 0.55 --background noise --object-texture noise \
        --train-per-class 60 --val-per-class 20 --min-frames 24 --max-frames 24
    python tools/make_synthetic.py reid --out data/synthetic_reid [--seed 0]

action: H.264 videos of an object moving left / right / up / down (classes only a temporal model can tell
apart), with generic list files DIR/train.txt, DIR/val.txt ("videos/<name>.mp4 <label>"), DIR/classes.txt and
DIR/flip_pairs.txt (the classes a horizontal flip swaps, for data.flip_pairs_file).
reid: a MARS-layout dataset (bbox_train/, bbox_test/, info/).
Exit status 0 on success, 1 with a one-line reason on bad arguments or a failed write.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from video_attn.data.synthetic.action import (
    BACKGROUNDS,
    SHAPES,
    TEXTURES,
    TRAJECTORIES,
    MotionStyle,
    make_action_dataset,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Write a synthetic action or ReID dataset (real file formats).")
    sub = p.add_subparsers(dest="kind", required=True)
    action = sub.add_parser("action", help="moving-object H.264 videos + video list files")
    action.add_argument("--out", required=True, type=Path, help="output folder")
    action.add_argument("--seed", type=int, default=0)
    action.add_argument("--num-classes", type=int, default=4, help="motion directions, 2..8 (default 4)")
    action.add_argument("--train-per-class", type=int, default=256)
    action.add_argument("--val-per-class", type=int, default=16)
    action.add_argument("--min-frames", type=int, default=16)
    action.add_argument("--max-frames", type=int, default=24)
    action.add_argument("--size", type=int, default=64, help="frame side in pixels (even, default 64)")
    look = action.add_argument_group("look and motion (defaults: the quick start's data)")
    look.add_argument("--shape", choices=SHAPES, default="random")
    look.add_argument("--object-size", type=int, nargs=2, metavar=("MIN", "MAX"),
                      help="side of the object in pixels (default: size/5 to 3 size/10)")
    look.add_argument("--travel", type=float, nargs=2, metavar=("MIN", "MAX"), default=(0.6, 0.9),
                      help="distance moved over the clip, fraction of the frame side (default 0.6 0.9)")
    look.add_argument("--trajectory", choices=TRAJECTORIES, default="wrap",
                      help="wrap: leave one edge and re-enter at the other; straight: stay in the frame")
    look.add_argument("--background", choices=BACKGROUNDS, default="smooth",
                      help="smooth: dark texture, bright object; noise: static per-pixel noise on a colour")
    look.add_argument("--object-texture", choices=TEXTURES, default="solid")
    reid = sub.add_parser("reid", help="MARS-layout tracklets + info files")
    reid.add_argument("--out", required=True, type=Path, help="output folder")
    reid.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.time()
    try:
        if args.kind == "action":
            counts = make_action_dataset(
                args.out, seed=args.seed, num_classes=args.num_classes, train_per_class=args.train_per_class,
                val_per_class=args.val_per_class, min_frames=args.min_frames, max_frames=args.max_frames,
                size=args.size, style=MotionStyle(
                    shape=args.shape, object_size=tuple(args.object_size) if args.object_size else None,
                    travel=tuple(args.travel), trajectory=args.trajectory, background=args.background,
                    object_texture=args.object_texture),
            )
            summary = ", ".join(f"{n} {split}" for split, n in counts.items())
        else:
            from video_attn.data.synthetic.reid import make_reid_dataset

            make_reid_dataset(args.out, seed=args.seed)
            summary = "MARS layout"
    except (ValueError, OSError) as exc:
        print(f"make_synthetic.py: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.kind} dataset to {args.out} ({summary}) in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
