"""Optimiser construction with the official TSN/TAM parameter groups.

Groups (as in the official TAM/TSN ``get_optim_policies``): the new classifier's weight trains at
``lr * fc_lr_mult`` (5) and its bias at ``lr * fc_bias_lr_mult`` (10); when ``no_decay_norm_bias`` is set,
normalisation parameters and all biases get no weight decay. Every group remembers its multiplier in
``lr_mult`` so the scheduler scales it, and a ``name`` for logging.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from video_attn.config.schema import TrainConfig

logger = logging.getLogger(__name__)

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def scaled_lr(train_cfg: TrainConfig, world_size: int) -> float:
    """``train.lr``, linearly scaled by total batch / ``base_batch_size`` when ``scale_lr`` is set."""
    if not train_cfg.scale_lr:
        return train_cfg.lr
    total = train_cfg.batch_size * world_size * train_cfg.accumulation_steps
    return train_cfg.lr * total / train_cfg.base_batch_size


def build_param_groups(model: nn.Module, train_cfg: TrainConfig, lr: float) -> list[dict]:
    """Split trainable parameters into (up to) six groups: {classifier w, classifier b, rest} x {decay, no}.

    Empty groups are dropped. ``model.classifier`` (if present) is the new fc layer.
    """
    classifier = getattr(model, "classifier", None)
    fc_weight_ids: set[int] = set()
    fc_bias_ids: set[int] = set()
    if isinstance(classifier, nn.Module):
        for name, p in classifier.named_parameters():
            (fc_bias_ids if name.endswith("bias") else fc_weight_ids).add(id(p))

    no_decay_ids: set[int] = set()
    if train_cfg.no_decay_norm_bias:
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, _NORM_TYPES) or name.endswith("bias"):
                    no_decay_ids.add(id(p))

    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in fc_weight_ids:
            kind = "fc_weight"
        elif id(p) in fc_bias_ids:
            kind = "fc_bias"
        else:
            kind = "base"
        buckets.setdefault((kind, id(p) in no_decay_ids), []).append(p)

    mults = {"base": 1.0, "fc_weight": train_cfg.fc_lr_mult, "fc_bias": train_cfg.fc_bias_lr_mult}
    groups = []
    for kind in ("base", "fc_weight", "fc_bias"):
        for no_decay in (False, True):
            params = buckets.get((kind, no_decay))
            if not params:
                continue
            groups.append(
                {
                    "params": params,
                    "name": f"{kind}{'_no_decay' if no_decay else ''}",
                    "lr": lr * mults[kind],
                    "lr_mult": mults[kind],
                    "initial_lr": lr * mults[kind],
                    "weight_decay": 0.0 if no_decay else train_cfg.weight_decay,
                }
            )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return groups


def build_optimizer(model: nn.Module, train_cfg: TrainConfig, world_size: int = 1) -> torch.optim.Optimizer:
    """SGD (momentum, optional nesterov), Adam or AdamW over :func:`build_param_groups`."""
    lr = scaled_lr(train_cfg, world_size)
    groups = build_param_groups(model, train_cfg, lr)
    if train_cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            groups,
            lr=lr,
            momentum=train_cfg.momentum,
            nesterov=train_cfg.nesterov,
            weight_decay=train_cfg.weight_decay,
        )
    elif train_cfg.optimizer == "adam":
        # Adam's weight_decay is L2 in the gradient (torchreid/strong-baseline behaviour).
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=train_cfg.weight_decay)
    elif train_cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=train_cfg.weight_decay)
    else:
        raise ValueError(f"train.optimizer={train_cfg.optimizer!r}; valid: sgd, adam, adamw")
    logger.info(
        "optimizer %s lr=%g groups: %s",
        train_cfg.optimizer,
        lr,
        ", ".join(
            f"{g['name']}({len(g['params'])}, lr x{g['lr_mult']:g}, wd {g['weight_decay']:g})" for g in groups
        ),
    )
    return opt
