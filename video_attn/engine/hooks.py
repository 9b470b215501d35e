"""Training-loop hooks (detectron2-style): small objects called at fixed points of :class:`Trainer`.

Order of calls: ``before_train``; per epoch ``before_epoch``, ``after_step`` after every optimiser step,
``after_epoch``; ``after_train`` (also when the run stops early). Hooks run on every rank; those that write
files check ``trainer.is_main`` themselves, and those that run collectives (evaluation, checkpointing) run on
all ranks in the same order.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from .trainer import Trainer

logger = logging.getLogger(__name__)


class HookBase:
    """Base class: override any of the five methods. ``self.trainer`` is set by ``Trainer.register_hooks``."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def annealed_temperature(epoch: int, start: float, end: float, anneal_epochs: int) -> float:
    """Linear from ``start`` at epoch 0 to end at ``anneal_epochs``, then ``end`` (DynamicConv: 30 -> 1)."""
    if anneal_epochs <= 0:
        return end
    frac = min(epoch, anneal_epochs) / anneal_epochs
    return start + (end - start) * frac


class TemperatureHook(HookBase):
    """Before each epoch, calls ``set_temperature(t)`` on every module with it (DynamicConv, Chen et al.)."""

    def __init__(self, start: float, end: float, anneal_epochs: int) -> None:
        self.start, self.end, self.anneal_epochs = start, end, anneal_epochs

    def before_epoch(self) -> None:
        t = annealed_temperature(self.trainer.epoch, self.start, self.end, self.anneal_epochs)
        modules = [
            m for m in self.trainer.unwrapped_model.modules() if callable(getattr(m, "set_temperature", None))
        ]
        for m in modules:
            m.set_temperature(t)
        if modules:
            logger.info("epoch %d: temperature %.3f on %d module(s)", self.trainer.epoch + 1, t, len(modules))
            self.trainer.log_scalar("train/temperature", t, self.trainer.iter)


class PeriodicCheckpointer(HookBase):
    """Writes ``last.pt`` after every epoch and every ``every_iters`` optimiser steps (0: epochs only)."""

    def __init__(self, every_iters: int = 0) -> None:
        self.every_iters = every_iters

    def after_step(self) -> None:
        if self.every_iters > 0 and self.trainer.iter % self.every_iters == 0:
            self.trainer.save_checkpoint("last.pt")

    def after_epoch(self) -> None:
        self.trainer.save_checkpoint("last.pt")


class EvalHook(HookBase):
    """Evaluates every ``every_epochs`` epochs (and after the last), keeps ``best.pt`` and ``metrics.json``.

    ``eval_fn(model) -> dict`` runs on every rank and returns the same metrics everywhere.
    ``metric`` names the key that decides ``best.pt`` (higher is better: top1 for action, mAP for ReID).
    Must be registered before :class:`PeriodicCheckpointer` so ``last.pt`` records the best metric.
    """

    def __init__(
        self,
        eval_fn: Callable[[nn.Module], dict[str, Any]],
        metric: str,
        every_epochs: int = 1,
        work_dir: str | Path | None = None,
    ) -> None:
        self.eval_fn = eval_fn
        self.metric = metric
        self.every_epochs = max(1, every_epochs)
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.best = -math.inf
        self.best_epoch = -1
        self.last_metrics: dict[str, Any] | None = None

    def _due(self) -> bool:
        t = self.trainer
        return (t.epoch + 1) % self.every_epochs == 0 or t.epoch + 1 == t.max_epochs

    def after_epoch(self) -> None:
        if not self._due():
            return
        t = self.trainer
        metrics = self.eval_fn(t.unwrapped_model)
        t.model.train()
        self.last_metrics = metrics
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                t.log_scalar(f"val/{key}", value, t.iter)
        value = metrics.get(self.metric)
        if value is None:
            raise KeyError(f"evaluation returned no {self.metric!r}; got keys {sorted(metrics)}")
        summary = ", ".join(f"{k}={v:.2f}" for k, v in metrics.items() if isinstance(v, float))
        logger.info("epoch %d validation: %s", t.epoch + 1, summary)
        if value > self.best:
            self.best, self.best_epoch = float(value), t.epoch
            t.save_checkpoint("best.pt")
            logger.info("new best %s=%.2f at epoch %d", self.metric, value, t.epoch + 1)
        if t.is_main and self.work_dir is not None:
            out = dict(
                metrics,
                epoch=t.epoch + 1,
                best_metric=self.metric,
                best=self.best,
                best_epoch=self.best_epoch + 1,
            )
            write_json_atomic(self.work_dir / "metrics.json", out)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "metric": self.metric}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", -math.inf))
        self.best_epoch = int(state.get("best_epoch", -1))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """JSON file written atomically (metrics are never half-written)."""
    from .checkpoint import atomic_write

    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
