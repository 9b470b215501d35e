"""Import a checkpoint of the official TAM code (liu-zhy/temporal-adaptive-module) into this project's TANet.

The official file is a dict ``{epoch, arch, state_dict, best_prec1}``; ``state_dict`` keys carry the
DataParallel prefix ``module.`` (stripped first when present). Key mapping::

    base_model.conv1.* / bn1.*                   -> backbone.conv1.* / bn1.*
    base_model.layerX.Y.net.<conv|bn|downsample>  -> backbone.layerX.Y.<same>   (Bottleneck wrapped in .net)
    base_model.layerX.Y.tam.{G,L}.*               -> backbone.layerX.Y.temporal.{G,L}.*   (TAM, same names)
    new_fc.{weight,bias}                          -> classifier.{weight,bias}

The official backbone fc is a Dropout (no keys). The target model is built from a ``ModelConfig``
(``arch: tanet``) and every key and shape is checked: a checkpoint trained with another number of segments
or classes is an error naming both numbers; missing or unknown keys are errors listing them. BN
``num_batches_tracked`` buffers absent from old (torch < 0.4.1) files keep the model's value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import torch

from video_attn.config.schema import BackboneConfig, ModelConfig

__all__ = ["convert_official_tam", "infer_tam_model_cfg", "official_tam_key_to_project"]

logger = logging.getLogger(__name__)

_WRAPPED = re.compile(r"^base_model\.(layer[1-4]\.\d+)\.net\.(.+)$")
_TAM = re.compile(r"^base_model\.(layer[1-4]\.\d+)\.tam\.(.+)$")
_STEM = re.compile(r"^base_model\.((conv1|bn1)\..+)$")
_TAM_G0 = re.compile(r"^backbone\.(layer[1-4]\.\d+)\.temporal\.G\.0\.weight$")
_DEPTHS = {6: 50, 23: 101}  # blocks in layer3 -> ResNet depth (Bottleneck)


def _strip_module(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def official_tam_key_to_project(key: str) -> str:
    """This project's key for an official TAM key (without ``module.``); KeyError when unknown."""
    m = _WRAPPED.match(key)
    if m:
        return f"backbone.{m.group(1)}.{m.group(2)}"
    m = _TAM.match(key)
    if m:
        return f"backbone.{m.group(1)}.temporal.{m.group(2)}"
    m = _STEM.match(key)
    if m:
        return f"backbone.{m.group(1)}"
    if key.startswith("new_fc."):
        return "classifier." + key[len("new_fc.") :]
    raise KeyError(key)


def infer_tam_model_cfg(state_dict: Mapping[str, torch.Tensor]) -> ModelConfig:
    """The ``ModelConfig`` of an official TAM state_dict (depth, width, T, K, alpha, beta, classes)."""
    sd = _strip_module(state_dict)
    try:
        fc = sd["new_fc.weight"]
        stem = sd["base_model.conv1.weight"]
        g0 = sd["base_model.layer1.0.tam.G.0.weight"]
        g3 = sd["base_model.layer1.0.tam.G.3.weight"]
        l0 = sd["base_model.layer1.0.tam.L.0.weight"]
    except KeyError as e:
        raise ValueError(f"not an official TAM state_dict: key {e.args[0]!r} is missing") from None
    layer3 = {int(k.split(".")[2]) for k in sd if k.startswith("base_model.layer3.")}
    depth = _DEPTHS.get(len(layer3))
    if depth is None:
        raise ValueError(
            f"official TAM checkpoint has {len(layer3)} blocks in layer3; expected 6 (R50) or 23 (R101)"
        )
    num_segments = g0.shape[1]
    kernel_size = g3.shape[0]
    if l0.shape[2] != kernel_size:
        raise ValueError(
            f"official TAM checkpoint: L.0.weight {tuple(l0.shape)} has {l0.shape[2]} taps but G.3.weight "
            f"{tuple(g3.shape)} has {kernel_size}; the official module uses one kernel_size for both"
        )
    return ModelConfig(
        arch="tanet",
        num_classes=fc.shape[0],
        num_segments=num_segments,
        backbone=BackboneConfig(depth=depth, base_width=stem.shape[0]),
        temporal_kwargs={
            "alpha": g0.shape[0] // num_segments,
            "beta": l0.shape[1] // l0.shape[0],
            "kernel_size": kernel_size,
        },
    )


def convert_official_tam(
    state_dict: Mapping[str, torch.Tensor], model_cfg: ModelConfig | None = None
) -> dict[str, torch.Tensor]:
    """Map an official TAM ``state_dict`` to this project's TANet keys and check it against ``model_cfg``.

    Args:
        state_dict: the official ``checkpoint["state_dict"]`` (``module.`` prefix optional).
        model_cfg: the target model; ``None`` infers it from the checkpoint (:func:`infer_tam_model_cfg`).
    Returns:
        a state_dict that ``build_model(model_cfg).load_state_dict(..., strict=True)`` accepts.
    """
    sd = _strip_module(state_dict)
    if model_cfg is None:
        model_cfg = infer_tam_model_cfg(sd)
    if model_cfg.arch != "tanet":
        raise ValueError(f"official TAM checkpoints need model.arch=tanet, got {model_cfg.arch!r}")
    from video_attn.models import build_model

    target = build_model(model_cfg).state_dict()
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key.startswith("base_model.fc."):
            logger.info("dropping the backbone classifier key %s", key)
            continue
        try:
            new_key = official_tam_key_to_project(key)
        except KeyError:
            unknown.append(key)
            continue
        out[new_key] = value
    if unknown:
        raise ValueError(f"{len(unknown)} unknown keys in the official TAM state_dict: {unknown[:10]}")

    # Clear errors for the two usual mismatches before the generic shape check.
    fc = out.get("classifier.weight")
    if fc is not None and fc.shape[0] != model_cfg.num_classes:
        raise ValueError(
            f"checkpoint classifier has {fc.shape[0]} classes but model.num_classes={model_cfg.num_classes}"
        )
    for key, value in out.items():
        m = _TAM_G0.match(key)
        if m and key in target and value.shape[1] != model_cfg.num_segments:
            raise ValueError(
                f"checkpoint TAM ({m.group(1)}) was trained with {value.shape[1]} segments "
                f"(G.0.weight {tuple(value.shape)}) but model.num_segments={model_cfg.num_segments}; "
                "TAM's number of segments is fixed, use a config with the checkpoint's value"
            )
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in out.items()
        if k in target and v.shape != target[k].shape
    ]
    if mismatched:
        raise ValueError(f"shape mismatch for {len(mismatched)} key(s): " + "; ".join(mismatched[:10]))
    extra = sorted(set(out) - set(target))
    if extra:
        raise ValueError(f"{len(extra)} checkpoint keys have no place in the model: {extra[:10]}")
    missing = [k for k in target if k not in out]
    filled = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{len(missing)} model keys are missing from the checkpoint: {missing[:10]}")
    for k in filled:
        out[k] = target[k].clone()
    converted = {k: out[k].to(target[k].dtype) for k in target}
    logger.info("converted %d official TAM tensors (%d BN counters filled)", len(sd), len(filled))
    return converted
