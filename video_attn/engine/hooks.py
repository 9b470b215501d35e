"""The hooks of the training loop: LR schedule, metric writing, DynamicConv temperature, evaluation,
checkpoints and signal handling.

Default order (:class:`~video_attn.engine.trainer.Trainer` registers them so; hooks run in this order at every
call point, and the order matters where noted):

1. ``lr_scheduler`` :class:`LRSchedulerHook`: steps the schedule after each optimiser step, before anything
   logs the lr or saves the scheduler.
2. ``metrics`` :class:`MetricWriter`: console lines, TensorBoard scalars, throughput and data time; its epoch
   summary comes before the validation lines.
3. ``temperature`` :class:`TemperatureHook`: DynamicConv's softmax temperature for the epoch.
4. ``eval`` :class:`EvalHook`: validation, ``best.pt`` and ``metrics.json``; before the checkpointer, so that
   ``last.pt`` records the best metric so far.
5. ``checkpointer`` :class:`PeriodicCheckpointer`: ``last.pt`` every N steps and after every epoch.
6. ``stop_on_signal`` :class:`StopOnSignal`: last, so that the ``last.pt`` it writes on Ctrl-C follows every
   other hook of the step.

Each hook's state is saved in checkpoints under its ``name``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from . import distributed as du
from .checkpoint import TrainingCheckpointer, write_json_atomic
from .train_loop import HookBase

logger = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM was received; ``checkpoint`` was written before stopping."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted; checkpoint {checkpoint}")
        self.checkpoint = checkpoint


def _checkpointer_of(hook: HookBase) -> TrainingCheckpointer:
    checkpointer = hook.trainer.checkpointer
    if checkpointer is None:
        raise ValueError(f"hook {hook.name!r} writes checkpoints but the training loop has no checkpointer")
    return checkpointer


class LRSchedulerHook(HookBase):
    """Calls ``scheduler.step()`` after every optimiser step (the schedules are per iteration)."""

    name = "lr_scheduler"

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def after_step(self) -> None:
        self.scheduler.step()


class MetricWriter(HookBase):
    """Logs training progress: every ``log_every_iters`` steps and at the end of each epoch.

    Per logged step: loss, lr, the fraction of time spent waiting for data and the throughput over the steps
    since the last line (console), and ``train/<loss part>``, ``lr/<group name>``, ``time/data_fraction``,
    ``time/clips_per_s`` (TensorBoard, x = iteration). Per epoch: mean loss and parts, clips/s, data time and
    the number of failed/replaced samples summed over ranks (``epoch/*``, x = epoch). Throughput counts all
    ranks. A tqdm bar is shown on rank 0 when stderr is a terminal.
    """

    name = "metrics"

    def __init__(self, log_every_iters: int = 20) -> None:
        self.log_every_iters = max(1, log_every_iters)
        self.epoch_stats: dict[str, float] = {}
        self._progress: Any = None

    def before_epoch(self) -> None:
        self._epoch = {"batches": 0, "samples": 0, "num_failed": 0, "data_time": 0.0, "step_time": 0.0}
        self._loss_sum = 0.0
        self._parts_sum: dict[str, float] = {}
        self._window = {"samples": 0, "data_time": 0.0, "step_time": 0.0}
        t = self.trainer
        if t.is_main and sys.stderr.isatty():
            from tqdm import tqdm

            self._progress = tqdm(
                total=t.batches_per_epoch,
                initial=t.start_inner_iter if t.epoch == t.start_epoch else 0,
                desc=f"epoch {t.epoch + 1}/{t.max_epochs}",
                leave=False,
            )

    def after_step(self) -> None:
        t, step = self.trainer, self.trainer.last_step
        for key in ("batches", "samples", "num_failed", "data_time", "step_time"):
            self._epoch[key] += getattr(step, key)
        for key in ("samples", "data_time", "step_time"):
            self._window[key] += getattr(step, key)
        self._loss_sum += step.loss * step.batches
        for name, value in step.parts.items():
            self._parts_sum[name] = self._parts_sum.get(name, 0.0) + value * step.batches
        lr = t.optimizer.param_groups[0]["lr"]
        if self._progress is not None:
            self._progress.update(step.batches)
            self._progress.set_postfix(loss=f"{step.loss:.4f}", lr=f"{lr:.2e}")
        if t.iter % self.log_every_iters != 0:
            return
        throughput = self._window["samples"] * t.world_size / max(self._window["step_time"], 1e-9)
        data_fraction = self._window["data_time"] / max(self._window["step_time"], 1e-9)
        logger.info(
            "epoch %d iter %d/%d (global %d) loss %.4f lr %.3e data %.1f%% %.1f clips/s",
            t.epoch + 1,
            t.inner_iter,
            t.batches_per_epoch,
            t.iter,
            step.loss,
            lr,
            100 * data_fraction,
            throughput,
        )
        t.log_scalar("train/loss", step.loss, t.iter)
        for name, value in step.parts.items():
            t.log_scalar(f"train/{name}", value, t.iter)
        for group in t.optimizer.param_groups:
            t.log_scalar(f"lr/{group.get('name', 'group')}", group["lr"], t.iter)
        t.log_scalar("time/data_fraction", data_fraction, t.iter)
        t.log_scalar("time/clips_per_s", throughput, t.iter)
        self._window = {"samples": 0, "data_time": 0.0, "step_time": 0.0}

    def after_epoch(self) -> None:
        t, stats = self.trainer, self._epoch
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        batches = max(stats["batches"], 1)
        failed = int(du.all_reduce_sum(stats["num_failed"], t.device))  # a collective: every rank is here
        self.epoch_stats = {
            "loss": self._loss_sum / batches,
            "num_failed": failed,
            "data_time": stats["data_time"],
            "step_time": stats["step_time"],
            "clips_per_s": stats["samples"] * t.world_size / max(stats["step_time"], 1e-9),
        }
        parts = " ".join(f"{name} {value / batches:.4f}" for name, value in self._parts_sum.items())
        logger.info(
            "epoch %d/%d done: loss %.4f %s| %d batches, %.1f clips/s, data %.1fs of %.1fs, "
            "failed/replaced samples %d",
            t.epoch + 1,
            t.max_epochs,
            self.epoch_stats["loss"],
            parts + " " if parts else "",
            stats["batches"],
            self.epoch_stats["clips_per_s"],
            stats["data_time"],
            stats["step_time"],
            failed,
        )
        t.log_scalar("epoch/loss", self.epoch_stats["loss"], t.epoch + 1)
        t.log_scalar("epoch/num_failed", failed, t.epoch + 1)
        t.log_scalar("epoch/clips_per_s", self.epoch_stats["clips_per_s"], t.epoch + 1)

    def after_train(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if self.trainer.tb_writer is not None:
            self.trainer.tb_writer.flush()


def annealed_temperature(epoch: int, start: float, end: float, anneal_epochs: int) -> float:
    """Linear from ``start`` at epoch 0 to ``end`` at ``anneal_epochs``, then ``end`` (DynamicConv: 30->1)."""
    if anneal_epochs <= 0:
        return end
    frac = min(epoch, anneal_epochs) / anneal_epochs
    return start + (end - start) * frac


class TemperatureHook(HookBase):
    """Before each epoch, ``set_temperature(t)`` on every module with it (DynamicConv, Chen et al. CVPR'20).

    ``t`` follows :func:`annealed_temperature`; the paper anneals the attention softmax temperature from 30
    to 1 over the first 10 epochs.
    """

    name = "temperature"

    def __init__(self, start: float, end: float, anneal_epochs: int) -> None:
        self.start, self.end, self.anneal_epochs = start, end, anneal_epochs

    def before_epoch(self) -> None:
        t = self.trainer
        temperature = annealed_temperature(t.epoch, self.start, self.end, self.anneal_epochs)
        modules = [m for m in t.unwrapped_model.modules() if callable(getattr(m, "set_temperature", None))]
        for m in modules:
            m.set_temperature(temperature)
        if modules:
            logger.info("epoch %d: temperature %.3f on %d module(s)", t.epoch + 1, temperature, len(modules))
            t.log_scalar("train/temperature", temperature, t.iter)


class EvalHook(HookBase):
    """Evaluates every ``every_epochs`` epochs (and after the last), keeps ``best.pt`` and ``metrics.json``.

    ``eval_fn(model) -> dict`` runs on every rank and returns the same metrics everywhere.
    ``metric`` names the key that decides ``best.pt`` (higher is better: top1 for action, mAP for ReID).
    ``metrics.json`` (in ``work_dir``, rank 0) holds the latest metrics plus ``epoch``, ``best_metric``,
    ``best`` and ``best_epoch`` (1-based). Runs before :class:`PeriodicCheckpointer`, so that ``last.pt``
    records the best metric so far.
    """

    name = "eval"

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

    def after_epoch(self) -> None:
        t = self.trainer
        if (t.epoch + 1) % self.every_epochs != 0 and t.epoch + 1 != t.max_epochs:
            return
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
            _checkpointer_of(self).save("best.pt")
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


class PeriodicCheckpointer(HookBase):
    """Writes ``last.pt`` after every epoch and every ``every_iters`` optimiser steps (0: epochs only)."""

    name = "checkpointer"

    def __init__(self, every_iters: int = 0) -> None:
        self.every_iters = every_iters

    def after_step(self) -> None:
        if self.every_iters > 0 and self.trainer.iter % self.every_iters == 0:
            _checkpointer_of(self).save("last.pt")

    def after_epoch(self) -> None:
        _checkpointer_of(self).save("last.pt")


class StopOnSignal(HookBase):
    """On SIGINT (Ctrl-C) or SIGTERM: finish the step, write ``last.pt``, raise ``TrainingInterrupted``.

    SIGTERM too, because torchrun and cluster schedulers stop workers with it before killing them. A second
    signal stops at once (``KeyboardInterrupt``). In distributed runs the flag is summed over ranks after
    every step, so all ranks stop at the same iteration. The previous handlers are restored after training.
    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    name = "stop_on_signal"

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def before_train(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # ValueError: not the main thread
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning(
            "%s received: will write a checkpoint after the current step and stop",
            signal.Signals(signum).name,
        )

    def after_step(self) -> None:
        t = self.trainer
        stop = self.requested
        if t.world_size > 1:
            stop = du.all_reduce_sum(float(stop), t.device) > 0
        if not stop:
            return
        path = _checkpointer_of(self).save("last.pt")
        logger.warning(
            "interrupted at epoch %d, iteration %d; checkpoint written to %s (resume with --resume)",
            t.epoch + 1,
            t.iter,
            path,
        )
        raise TrainingInterrupted(path)

    def after_train(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
