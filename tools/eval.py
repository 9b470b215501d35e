#!/usr/bin/env python3
"""Evaluate a checkpoint with the test protocol of its config.

    python tools/eval.py CONFIG --checkpoint PATH [--out FILE.json] [--split SPLIT] [KEY=VALUE ...]
    torchrun --nproc_per_node N tools/eval.py CONFIG --checkpoint PATH ...   # same numbers, N processes

Action: top1, top5, mean_class_accuracy (percent), num_videos (valid videos; failed ones are excluded and
counted in num_failed). ReID: mAP, mINP, rank1/5/10/20 (percent), num_query, num_gallery,
num_valid_queries, protocol.

The metrics go to FILE.json (default: <work_dir>/eval/<checkpoint name>[_<split>].json); for action, the
per-video predictions (FILE_predictions.csv / .npz: path, label, top-k classes with names and probabilities)
and the confusion matrix (FILE_confusion.npy / .png, with class names) go next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from _cli import load_cli_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Evaluate a video_attn checkpoint (action or ReID).")
    p.add_argument("config", help="path to the YAML config the model was trained with")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) with a 'model' state_dict")
    p.add_argument(
        "--out",
        default=None,
        help="metrics JSON file; action predictions and confusion matrix go next to it "
        "(default: <work_dir>/eval/<checkpoint name>[_<split>].json)",
    )
    p.add_argument("--split", default=None, help="action only: val or test (default: test if set, else val)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    return p.parse_intermixed_args(argv)


def _format(metrics: dict) -> str:
    if "mAP" in metrics:
        return (
            f"protocol {metrics['protocol']}: mAP {metrics['mAP']:.2f}  mINP {metrics['mINP']:.2f}  "
            f"rank1 {metrics['rank1']:.2f}  rank5 {metrics['rank5']:.2f}  rank10 {metrics['rank10']:.2f}  "
            f"rank20 {metrics['rank20']:.2f}\n"
            f"queries {metrics['num_query']} (valid {metrics['num_valid_queries']}, skipped "
            f"{metrics['num_skipped_queries']}), gallery {metrics['num_gallery']}"
        )
    return (
        f"split {metrics['split']} ({metrics['average']} averaged over views): top1 {metrics['top1']:.2f}  "
        f"top5 {metrics['top5']:.2f}  mean class accuracy {metrics['mean_class_accuracy']:.2f}  "
        f"videos {metrics['num_videos']} (failed {metrics.get('num_failed', 0)})"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_cli_config(args.config, args.overrides, args.checkpoint)
    if cfg is None:
        return 1
    from video_attn.apis import evaluate
    from video_attn.engine import distributed as du
    from video_attn.engine.checkpoint import CheckpointError

    out = args.out
    if out is None:
        name = Path(args.checkpoint).stem + (f"_{args.split}" if args.split else "")
        out = os.path.join(cfg.work_dir, "eval", f"{name}.json")
    try:
        metrics = evaluate(cfg, args.checkpoint, split=args.split, out=out)
        if du.get_rank() == 0:
            print(_format(metrics))
            print(json.dumps(metrics, sort_keys=True))
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        du.destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
