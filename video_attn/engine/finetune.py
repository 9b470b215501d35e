"""Fine-tuning: start a run from the weights of another (``model.init_from``) and freeze parts of the model
(``train.freeze``).

``model.init_from`` is the third way weights enter a run, next to ``--resume`` (continues the same run:
model, optimizer, schedule, RNG states and progress of ``last.pt``) and ``model.backbone.pretrained``
(ImageNet weights of the backbone only). It loads every model weight of a full checkpoint (a training
checkpoint of this project, or one written by ``tools/convert_checkpoint.py``) and nothing else: optimizer,
schedule and epochs start afresh. Weights whose shape differs from the model's (the classifier of a dataset
with another number of classes) keep their initialisation and are listed; every other key must match.

``train.freeze`` names parts of the model:

- a module path (``backbone``, ``backbone.layer1``, ``classifier``; ReID ``temporal``, ``head``): its
  parameters stop training (``requires_grad=False``, so the optimizer leaves them out) and it runs in eval
  mode (BatchNorm running statistics fixed, dropout off), as mmaction2's ``frozen_stages`` do;
- :data:`BN_STATS` (``bn_stats``): every BatchNorm layer of the model runs in eval mode, so its running
  statistics stay fixed while its affine parameters still train (mmaction2's ``norm_eval``), the usual
  choice when the fine-tuning batches are small.

The training loop puts the whole model in train mode at the start of every epoch; :class:`FreezeHook` sets the
frozen modules back to eval mode before every step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, model_state_from_checkpoint
from .train_loop import HookBase

logger = logging.getLogger(__name__)

__all__ = ["BN_STATS", "FreezeHook", "freeze_parts", "init_from_checkpoint"]

# the train.freeze name of "every BatchNorm layer's running statistics"
BN_STATS = "bn_stats"

_SHOWN_KEYS = 8  # keys named in an error before "..."


def _some(keys: Sequence[str]) -> str:
    return ", ".join(keys[:_SHOWN_KEYS]) + (", ..." if len(keys) > _SHOWN_KEYS else "")


def init_from_checkpoint(model: nn.Module, path: str | Path) -> list[str]:
    """Copy the model weights of the checkpoint ``path`` into ``model``, except those of another shape.

    ``path`` holds a state_dict under ``model`` (this project's training checkpoints, converted official
    ones) or ``state_dict``, or is a bare state_dict; a ``module.`` prefix is stripped. Keys whose shapes
    differ keep the model's initialisation; they are logged with both shapes and returned. Any key the model
    has and the file lacks, or the other way round, raises :class:`CheckpointError` naming them.
    """
    try:
        state = model_state_from_checkpoint(load_checkpoint(path, map_location="cpu"), path)
    except CheckpointError as exc:
        raise CheckpointError(f"model.init_from: {exc}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        problems = [f"{len(missing)} key(s) missing from the file ({_some(missing)})"] if missing else []
        problems += [f"{len(unexpected)} not in the model ({_some(unexpected)})"] if unexpected else []
        raise CheckpointError(
            f"model.init_from {path} does not fit the model (another model.arch or model option?): "
            + ", ".join(problems)
        )
    skipped = [key for key, value in own.items() if state[key].shape != value.shape]
    # the key sets are equal, so strict=False only lets the skipped keys through
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    logger.info("model.init_from %s: loaded %d of %d tensors", path, len(own) - len(skipped), len(own))
    if skipped:
        shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} here" for k in skipped]
        logger.info(
            "model.init_from: %d tensor(s) of another shape keep their initialisation: %s",
            len(skipped),
            "; ".join(shapes),
        )
    return skipped


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _part_names(model: nn.Module, depth: int = 2) -> list[str]:
    """Module paths of at most ``depth`` components that hold parameters (what an error suggests)."""
    return [
        name
        for name, module in model.named_modules()
        if name and name.count(".") < depth and _has_parameters(module)
    ]


def freeze_parts(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """Freeze the parts of ``model`` that ``names`` (``train.freeze``) lists; see the module docstring.

    Sets ``requires_grad=False`` on the parameters of the named modules and returns the modules to keep in
    eval mode during training (give them to :class:`FreezeHook`). An unknown name raises ``ValueError``
    listing the valid ones.
    """
    modules = dict(model.named_modules())
    unknown = [n for n in names if n != BN_STATS and not (n and n in modules and _has_parameters(modules[n]))]
    if unknown:
        raise ValueError(
            f"train.freeze: no part {', '.join(map(repr, unknown))} in this {type(model).__name__}; "
            f"valid: {BN_STATS} (BatchNorm running statistics), "
            f"{', '.join(_part_names(model))} or a deeper module path"
        )
    keep_eval: list[nn.Module] = []
    for name in dict.fromkeys(names):  # in order, without repeats
        if name == BN_STATS:
            keep_eval += [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            continue
        module = modules[name]
        module.requires_grad_(False)
        keep_eval.append(module)
    if names:
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        logger.info(
            "train.freeze %s: %d of %d parameters frozen, %d module(s) kept in eval mode",
            list(names),
            frozen,
            total,
            len(keep_eval),
        )
    return keep_eval


class FreezeHook(HookBase):
    """Keeps the frozen parts of the model in eval mode while it trains.

    The loop calls ``model.train()`` at the start of every epoch (and evaluation switches modes in between),
    so the modules are put back in eval mode before every step; that costs a walk over their submodules.
    """

    name = "freeze"

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)

    def before_step(self) -> None:
        for module in self.modules:
            module.eval()
