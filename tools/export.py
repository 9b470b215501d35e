#!/usr/bin/env python3
"""Export a trained model to ONNX or TorchScript and check the file against eager PyTorch.

    python tools/export.py CONFIG --checkpoint CKPT --format onnx|torchscript --out FILE [--batch-size N]
                           [--tolerance 1e-4] [KEY=VALUE ...]

The exported model is fixed to N clips (--batch-size, default 1) of model.num_segments frames of
data.input_size (change them with overrides, e.g. data.input_size=[256,256]). Its input is the normalised
float32 clip batch (N, T, 3, H, W) the PyTorch model takes (ONNX input name "clips"): normalisation with
data.mean / data.std (and, with data.subtract_clip_mean, the subtraction of each clip's per-channel mean)
happens outside it. Its output is the logits (N, K) of an action model, or the test
embedding (N, D) of a ReID model (before L2 normalisation), named "logits" / "embeddings".

After writing FILE the tool runs it (onnxruntime, or torch.jit.load) and the eager model on a random clip
and prints the largest absolute difference. Exit status: 0 when it is at most --tolerance; 1 when it is
above (FILE is kept for inspection), or after a one-line error (a model that cannot be exported names the
submodule where the exporter failed; nothing is written).
"""

from __future__ import annotations

import argparse
import sys

from _cli import load_cli_config

FORMATS = ("onnx", "torchscript")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export a video_attn checkpoint to ONNX or TorchScript.")
    p.add_argument("config", help="path to the YAML config the model was trained with")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) with a 'model' state_dict")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx or torchscript")
    p.add_argument("--out", required=True, help="file to write (e.g. model.onnx, model.pt)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="clips per call of the exported model (default 1)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest absolute difference from eager PyTorch that passes (default 1e-4)")
    p.add_argument("--json", default=None, help="also write the result (shapes, difference) to this file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    args = p.parse_intermixed_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if args.tolerance < 0:
        p.error("--tolerance must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_cli_config(args.config, args.overrides, args.checkpoint)
    if cfg is None:
        return 1
    from video_attn.apis import ExportError, export_checkpoint
    from video_attn.engine.checkpoint import CheckpointError, write_json_atomic
    from video_attn.engine.logger import setup_logging

    setup_logging(None)
    try:
        result = export_checkpoint(
            cfg, args.checkpoint, args.format, args.out, batch_size=args.batch_size, tolerance=args.tolerance
        )
    except (ExportError, CheckpointError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    names = f" (ONNX names {result.input_name}, {result.output_name})" if result.format == "onnx" else ""
    centred = ", each clip's mean subtracted (data.subtract_clip_mean)" if cfg.data.subtract_clip_mean else ""
    print(
        f"wrote {result.path} ({result.format}): input {list(result.input_shape)} float32 clips normalised "
        f"with data.mean / data.std{centred}, output {list(result.output_shape)} {result.output_name}{names}"
    )
    verdict = "passed" if result.passed else "FAILED"
    print(
        f"max abs difference from eager PyTorch: {result.max_abs_diff:.3g} "
        f"(tolerance {result.tolerance:g}): {verdict}"
    )
    if args.json:
        record = {"config": args.config, "checkpoint": args.checkpoint, **result.to_dict()}
        write_json_atomic(args.json, record)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
