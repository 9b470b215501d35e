"""Import a checkpoint of the official GLTR code (ljn114514/GLTR) into :class:`~video_attn.models.reid_model.
ReIDModel` (``model.arch: gltr``, ``model.head: gltr``).

Key mapping (a leading DataParallel ``module.`` is stripped first)::

    conv1.* bn1.* layer1..4.*          -> backbone.<same>  (torchvision ResNet-50 keys)
    fc.*                               -> dropped, reported (the ImageNet classifier)
    feat.{weight,bias}                 -> temporal.embed.*  Linear(2048 -> 128)
    feat{i}.weight (128, 1, 3, 128)    -> temporal.dtp.{i-1}.weight (128, 128, 3): [o, 0, k, c] -> [o, c, k]
    Nonlocal_block{j}.{g,theta,phi}.*  -> temporal.tsa.{j}.{g,theta,phi}.*
    Nonlocal_block{j}.W.0.* / W.1.*    -> temporal.tsa.{j}.W.0.* / W.1.*
    feat_bn.*                          -> head.bn.*
    classifier.*                       -> head.classifier.*

1x1 convs stored as Conv2d (``(out, in, 1, 1)``) are reshaped to Conv1d. Missing keys, unknown keys and
shape mismatches raise ``ValueError`` listing them; BN ``num_batches_tracked`` absent from old checkpoints
is filled with 0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import torch

from video_attn.config.schema import ModelConfig

logger = logging.getLogger(__name__)

_BACKBONE = re.compile(r"^(conv1|bn1|layer[1-4])\.")
_DTP = re.compile(r"^feat(\d+)\.weight$")
_NONLOCAL = re.compile(r"^Nonlocal_block(\d+)\.(.+)$")


def _target_key(key: str) -> str | None:
    """This project's key for official key ``key`` (None: dropped)."""
    if key.startswith("fc."):
        return None
    if _BACKBONE.match(key):
        return "backbone." + key
    if key.startswith("feat."):
        return "temporal.embed." + key[len("feat.") :]
    m = _DTP.match(key)
    if m:
        return f"temporal.dtp.{int(m.group(1)) - 1}.weight"
    m = _NONLOCAL.match(key)
    if m:
        return f"temporal.tsa.{m.group(1)}.{m.group(2)}"
    if key.startswith("feat_bn."):
        return "head.bn." + key[len("feat_bn.") :]
    if key.startswith("classifier."):
        return "head." + key
    raise KeyError(key)


def _convert_tensor(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if _DTP.match(key) and value.dim() == 4:
        # official Conv2d(1, C, (3, C)) over the (T x C) map == Conv1d(C, C, 3): w[o, 0, k, c] -> [o, c, k]
        value = value[:, 0].permute(0, 2, 1)
    elif value.dim() == 4 and len(shape) == 3 and value.shape[-1] == 1 and value.shape[:3] == shape:
        value = value[..., 0]  # 1x1 Conv2d stored for a Conv1d
    return value.contiguous()


def convert_official_gltr(state_dict: Mapping[str, torch.Tensor], model_cfg: ModelConfig) -> dict:
    """Map an official GLTR ``state_dict`` to this project's ReID model keys (see the module docstring).

    ``model_cfg`` describes the target (``arch: gltr``, ``head: gltr``, ``num_classes`` = the checkpoint's
    classifier size, ``backbone.depth: 50``); its model is built to check every key and shape.
    """
    if model_cfg.arch != "gltr" or model_cfg.head != "gltr":
        raise ValueError(
            f"official GLTR checkpoints need model.arch=gltr and model.head=gltr, got {model_cfg.arch!r} / "
            f"{model_cfg.head!r}"
        )
    from video_attn.models.reid_model import build_reid_model

    target = build_reid_model(model_cfg).state_dict()
    out: dict[str, torch.Tensor] = {}
    unknown, dropped, mismatched = [], [], []
    for raw_key, value in state_dict.items():
        key = raw_key[len("module.") :] if raw_key.startswith("module.") else raw_key
        try:
            new_key = _target_key(key)
        except KeyError:
            unknown.append(raw_key)
            continue
        if new_key is None:
            dropped.append(raw_key)
            continue
        if new_key not in target:
            unknown.append(raw_key)
            continue
        tensor = _convert_tensor(key, torch.as_tensor(value), target[new_key].shape)
        if tensor.shape != target[new_key].shape:
            expected = tuple(target[new_key].shape)
            mismatched.append(f"{raw_key} {tuple(value.shape)} -> {new_key} expects {expected}")
            continue
        out[new_key] = tensor.to(target[new_key].dtype)
    for key in target:
        if key not in out and key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.long)
    missing = [k for k in target if k not in out]
    problems = []
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched[:10]))
    if unknown:
        problems.append(f"unexpected keys ({len(unknown)}): {', '.join(unknown[:10])}")
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:10])}")
    if problems:
        raise ValueError("official GLTR checkpoint does not match the model config: " + " | ".join(problems))
    if dropped:
        logger.info("dropped %d keys not used by the ReID model: %s", len(dropped), ", ".join(dropped[:5]))
    return out
