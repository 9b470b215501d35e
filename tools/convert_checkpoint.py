#!/usr/bin/env python3
"""Import a checkpoint of the official TAM or GLTR code into a video_attn checkpoint.

    python tools/convert_checkpoint.py tam  SRC DST [--config CONFIG] [--num-segments N] [--unsafe-load]
    python tools/convert_checkpoint.py gltr SRC DST [--config CONFIG] [--unsafe-load]

DST is ``{"model": state_dict, "config": cfg.to_dict() or None, "converted_from": {...}}``, written
atomically; ``tools/eval.py CONFIG --checkpoint DST`` evaluates it. Without ``--config`` the TAM model
(depth, width, segments, classes) is inferred from the checkpoint and printed as overrides.

SRC is read with ``torch.load(weights_only=True)``. Checkpoints pickled with non-tensor objects (an
``argparse.Namespace``, NumPy scalars) are refused; pass ``--unsafe-load`` to allow full unpickling of a file
you trust (unpickling can run arbitrary code).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import Any


class ConvertError(Exception):
    """A one-line reason the conversion cannot proceed."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Convert an official TAM / GLTR checkpoint to video_attn format.")
    p.add_argument("format", choices=["tam", "gltr"], help="which official code saved SRC")
    p.add_argument("src", type=Path, help="official checkpoint file")
    p.add_argument("dst", type=Path, help="output checkpoint (.pt) for tools/eval.py")
    p.add_argument("--config", default=None, help="video_attn config describing the target model")
    p.add_argument(
        "--num-segments", type=int, default=None, help="tam: segments the model is built for (checked)"
    )
    p.add_argument(
        "--unsafe-load",
        action="store_true",
        help="allow full unpickling of SRC (only for files you trust)",
    )
    return p.parse_args(argv)


def load_official(path: Path, unsafe_load: bool = False) -> tuple[dict, dict[str, Any]]:
    """(state_dict, metadata) of an official checkpoint file; ``weights_only=True`` unless ``unsafe_load``."""
    import torch

    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not unsafe_load:
            raise ConvertError(
                f"{path} holds non-tensor Python objects that torch.load(weights_only=True) refuses "
                f"({first}). If you trust this file, re-run with --unsafe-load to allow full unpickling."
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ConvertError(f"cannot read {path}: {exc}") from None
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        for key in ("epoch", "arch", "best_prec1"):
            value = obj.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float, str)):
                meta[key] = value
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConvertError(f"{path}: expected a state_dict or a dict with a 'state_dict' of tensors")
    return obj, meta


def convert_tam(state_dict: dict, config: str | None, num_segments: int | None) -> tuple[dict, Any]:
    from video_attn.config import load_config
    from video_attn.models.convert.tam import convert_official_tam, infer_tam_model_cfg

    cfg = None
    if config is not None:
        cfg = load_config(config)
        model_cfg = cfg.model
        if model_cfg.num_classes is None:  # unset in the config: the checkpoint's classifier decides
            model_cfg.num_classes = infer_tam_model_cfg(state_dict).num_classes
    else:
        model_cfg = infer_tam_model_cfg(state_dict)
        print(
            "inferred from the checkpoint: "
            f"model.arch=tanet model.backbone.depth={model_cfg.backbone.depth} "
            f"model.num_segments={model_cfg.num_segments} model.num_classes={model_cfg.num_classes}"
        )
    if num_segments is not None:
        model_cfg.num_segments = num_segments
    return convert_official_tam(state_dict, model_cfg), cfg


def convert_gltr(state_dict: dict, config: str | None) -> tuple[dict, Any]:
    from video_attn.config import load_config
    from video_attn.config.schema import BackboneConfig, ModelConfig
    from video_attn.models.convert.gltr import convert_official_gltr

    cfg = None
    fc = state_dict.get("classifier.weight", state_dict.get("module.classifier.weight"))
    if config is not None:
        cfg = load_config(config)
        model_cfg = cfg.model
        if model_cfg.num_classes is None:  # unset in the config: the checkpoint's classifier decides
            if fc is None:
                raise ConvertError("no classifier.weight in the GLTR checkpoint; set model.num_classes")
            model_cfg.num_classes = int(fc.shape[0])
    else:
        if fc is None:
            raise ConvertError("no classifier.weight in the GLTR checkpoint; pass --config")
        model_cfg = ModelConfig(
            arch="gltr",
            head="gltr",
            num_classes=int(fc.shape[0]),
            backbone=BackboneConfig(depth=50, last_stride=1),
        )
        print(
            f"inferred: model.arch=gltr model.num_classes={model_cfg.num_classes} (ResNet-50, last stride 1)"
        )
    return convert_official_gltr(state_dict, model_cfg), cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from video_attn.config import ConfigError
        from video_attn.engine.checkpoint import atomic_save

        state_dict, meta = load_official(args.src, args.unsafe_load)
        try:
            if args.format == "tam":
                converted, cfg = convert_tam(state_dict, args.config, args.num_segments)
            else:
                if args.num_segments is not None:
                    raise ConvertError("--num-segments applies to tam only")
                converted, cfg = convert_gltr(state_dict, args.config)
        except (ConfigError, ValueError) as exc:
            raise ConvertError(str(exc)) from None
        meta["format"] = f"official_{args.format}"
        meta["source"] = str(args.src)
        atomic_save(
            {
                "model": converted,
                "config": cfg.to_dict() if cfg is not None else None,
                "converted_from": meta,
            },
            args.dst,
        )
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst} ({len(converted)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
