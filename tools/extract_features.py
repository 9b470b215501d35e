#!/usr/bin/env python3
"""Write the embeddings of a split to a .npz file.

    python tools/extract_features.py CONFIG --checkpoint PATH --split SPLIT --out FILE.npz [KEY=VALUE ...]

Arrays: features (float32, N x D), labels (action) or pids + camids (ReID), paths (unicode strings, no
pickle: the video path or a tracklet's first frame), num_frames (int64), valid (bool), index (dataset row).
Runs under torchrun too (results gathered and de-duplicated by dataset index). Load with
numpy.load(FILE, allow_pickle=False).
"""

from __future__ import annotations

import argparse
import sys

from _cli import load_cli_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Extract per-video / per-tracklet embeddings to a .npz file.")
    p.add_argument("config", help="path to the YAML config")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) with a 'model' state_dict")
    p.add_argument("--split", required=True, help="action: train, val, test; ReID: train, query, gallery")
    p.add_argument("--out", required=True, help="output .npz file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_cli_config(args.config, args.overrides, args.checkpoint)
    if cfg is None:
        return 1
    from video_attn.apis import extract_features
    from video_attn.engine import distributed as du
    from video_attn.engine.checkpoint import CheckpointError

    try:
        arrays = extract_features(cfg, args.checkpoint, args.split, args.out)
        is_main = du.get_rank() == 0  # before the process group is destroyed
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        du.destroy_distributed()
    if is_main:
        n, d = arrays["features"].shape
        print(f"wrote {n} x {d} features ({int((~arrays['valid']).sum())} invalid) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
