#!/usr/bin/env python3
"""Train a video_attn model from a YAML config.

    python tools/train.py CONFIG [--resume | --overwrite] [KEY=VALUE ...]
    torchrun --nproc_per_node N tools/train.py CONFIG [KEY=VALUE ...]      # DDP (nccl on GPU, gloo on CPU)

Writes <work_dir>/checkpoints/{last,best}.pt, <work_dir>/tb/ (TensorBoard), <work_dir>/train.log and the last
validation metrics in <work_dir>/metrics.json. A work_dir that holds the results of an earlier run is an
error unless --resume (continue it) or --overwrite (delete them and start over). Exit status: 0 done, 1 error
(one line on stderr), 130 interrupted by Ctrl-C after writing checkpoints/last.pt (continue with --resume).
"""

from __future__ import annotations

import argparse
import json
import sys

from _cli import load_cli_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train an action (TANet/TSN/TSM) or ReID (GLTR, baselines) model from a YAML config.",
        epilog="Example: python tools/train.py configs/synthetic/tanet_r18.yaml train.iters=64 device=cpu",
    )
    p.add_argument("config", help="path to the YAML config")
    p.add_argument("--resume", action="store_true", help="continue from <work_dir>/checkpoints/last.pt")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the checkpoints, TensorBoard events, train.log and metrics.json of an earlier run in "
        "work_dir and start over (without it, such a work_dir is an error)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.lr=0.01")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_cli_config(args.config, args.overrides)
    if cfg is None:
        return 1
    from video_attn.apis import train
    from video_attn.engine import distributed as du
    from video_attn.engine.checkpoint import CheckpointError
    from video_attn.engine.trainer import NonFiniteLossError, TrainingInterrupted

    try:
        metrics = train(cfg, resume=args.resume, overwrite=args.overwrite)
        is_main = du.get_rank() == 0  # before the process group is destroyed
    except TrainingInterrupted as exc:
        print(f"interrupted: checkpoint written to {exc.checkpoint}; continue with --resume", file=sys.stderr)
        return 130
    except (CheckpointError, NonFiniteLossError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        du.destroy_distributed()
    if is_main and metrics:
        print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
