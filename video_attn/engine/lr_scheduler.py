"""Per-iteration learning-rate schedules with linear warmup.

``lr(it) = base_lr_of_group * warmup(it) * schedule(it)`` where ``it`` counts optimiser steps from 0:
- ``multistep``: ``gamma ** (number of milestones m with it >= m * iters_per_epoch)`` (milestones in epochs,
  as the official TAM recipe: x0.1 at 50/75/90);
- ``cosine``: ``0.5 * (1 + cos(pi * it / total_iters))`` over the whole run;
- ``constant``: 1.
Warmup (detectron2 style): ``factor + (1 - factor) * it / warmup_iters`` for ``it < warmup_iters``, then 1.
Unlike ``torch.optim.lr_scheduler.MultiStepLR`` (per epoch), the lr changes every iteration during warmup,
and the milestones take effect at exactly the first iteration of the milestone epoch.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from video_attn.config.schema import TrainConfig


class WarmupLRScheduler:
    """Sets ``group["lr"] = group["initial_lr"] * factor(it)``; :meth:`step` after each optimiser step."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: str,
        iters_per_epoch: int,
        epochs: int,
        milestones: list[int] | tuple[int, ...] = (),
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        warmup_factor: float = 0.1,
    ) -> None:
        if schedule not in ("multistep", "cosine", "constant"):
            raise ValueError(f"train.lr_schedule={schedule!r}; valid: multistep, cosine, constant")
        if iters_per_epoch <= 0:
            raise ValueError(f"iters_per_epoch must be positive, got {iters_per_epoch}")
        self.optimizer = optimizer
        self.schedule = schedule
        self.iters_per_epoch = iters_per_epoch
        self.total_iters = max(1, epochs * iters_per_epoch)
        self.milestone_iters = sorted(int(m) * iters_per_epoch for m in milestones)
        self.gamma = gamma
        self.warmup_iters = int(round(warmup_epochs * iters_per_epoch))
        self.warmup_factor = warmup_factor
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.last_iter = 0
        self._apply()

    def factor(self, it: int) -> float:
        if self.schedule == "multistep":
            f = self.gamma ** sum(1 for m in self.milestone_iters if it >= m)
        elif self.schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * min(it, self.total_iters) / self.total_iters))
        else:
            f = 1.0
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            f *= self.warmup_factor * (1.0 - alpha) + alpha
        return f

    def _apply(self) -> None:
        f = self.factor(self.last_iter)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f

    def step(self) -> None:
        self.last_iter += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_iter": self.last_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
        self._apply()


def build_scheduler(
    optimizer: torch.optim.Optimizer, train_cfg: TrainConfig, iters_per_epoch: int
) -> WarmupLRScheduler:
    return WarmupLRScheduler(
        optimizer,
        schedule=train_cfg.lr_schedule,
        iters_per_epoch=iters_per_epoch,
        epochs=train_cfg.num_epochs(iters_per_epoch),
        milestones=train_cfg.milestones,
        gamma=train_cfg.gamma,
        warmup_epochs=train_cfg.warmup_epochs,
        warmup_factor=train_cfg.warmup_factor,
    )
