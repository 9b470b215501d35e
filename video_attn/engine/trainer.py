"""The training loop with its default hooks and a checkpointer, built from one set of arguments.

Like detectron2's ``DefaultTrainer``: :class:`Trainer` is a :class:`~video_attn.engine.train_loop.TrainLoop`
that registers the built-in hooks (``lr_scheduler``, ``metrics`` first; ``stop_on_signal`` last) and owns a
:class:`~video_attn.engine.checkpoint.TrainingCheckpointer` writing ``<work_dir>/checkpoints/``. The caller
adds the run's own hooks (temperature, evaluation, periodic checkpoints) with :meth:`Trainer.register_hooks`;
they run between the built-in ones, in the order given (see :mod:`video_attn.engine.hooks` for the default
order).

``train()`` raises :class:`NonFiniteLossError` when the loss becomes NaN/inf (before any backward pass, so the
weights and the last checkpoint stay good) and :class:`TrainingInterrupted` after Ctrl-C / SIGTERM, once
``last.pt`` is written.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import TrainingCheckpointer
from .hooks import LRSchedulerHook, MetricWriter, StopOnSignal, TrainingInterrupted
from .train_loop import HookBase, LossFn, NonFiniteLossError, TrainLoop

__all__ = ["NonFiniteLossError", "Trainer", "TrainingInterrupted"]


class Trainer(TrainLoop):
    """Runs ``max_epochs`` epochs of ``loss_fn(model(batch["clip"]), batch)`` minimisation.

    Args:
        model: the model, possibly wrapped in DDP / compiled; ``unwrapped_model`` is saved.
        optimizer, scheduler: the scheduler has ``step()`` (called after every optimiser step) and
            ``state_dict()`` / ``load_state_dict()``.
        train_loader: a loader from ``video_attn.data.build.build_train_loader``.
        loss_fn: ``(outputs, batch) -> (loss, parts)``; ``parts`` are floats for logging.
        work_dir: where ``checkpoints/`` go (rank 0 writes).
        max_epochs, device, unwrapped_model, accumulation_steps, clip_grad, amp_dtype: as in
            :class:`~video_attn.engine.train_loop.TrainLoop`.
        log_every_iters: a console line (and TensorBoard scalars) every that many optimiser steps.
        config: the resolved config dict stored in every checkpoint.
        class_names: the names of the model's classes, stored in every checkpoint.
        tb_writer: a TensorBoard ``SummaryWriter`` on rank 0, or None.
        handle_sigint: register :class:`~video_attn.engine.hooks.StopOnSignal` (Ctrl-C writes ``last.pt``).
        extra_modules: other modules with trained state (e.g. centre-loss centres), saved under ``extra``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        train_loader: DataLoader,
        loss_fn: LossFn,
        work_dir: str | Path,
        max_epochs: int,
        device: torch.device | str = "cpu",
        unwrapped_model: nn.Module | None = None,
        accumulation_steps: int = 1,
        clip_grad: float | None = None,
        amp_dtype: torch.dtype | None = None,
        log_every_iters: int = 20,
        config: dict | None = None,
        tb_writer: Any = None,
        handle_sigint: bool = True,
        extra_modules: dict[str, nn.Module] | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__(
            model,
            optimizer,
            train_loader,
            loss_fn,
            max_epochs,
            device=device,
            unwrapped_model=unwrapped_model,
            accumulation_steps=accumulation_steps,
            clip_grad=clip_grad,
            amp_dtype=amp_dtype,
            tb_writer=tb_writer,
        )
        self.work_dir = Path(work_dir)
        self.scheduler = scheduler
        self.checkpointer = TrainingCheckpointer(
            self.work_dir / "checkpoints",
            loop=weakref.proxy(self),  # no reference cycle (see TrainLoop.register_hooks)
            model=self.unwrapped_model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=self.scaler,
            extra_modules=extra_modules,
            config=config,
            class_names=class_names,
        )
        self._last_hooks: list[HookBase] = [StopOnSignal()] if handle_sigint else []
        super().register_hooks([LRSchedulerHook(scheduler), MetricWriter(log_every_iters), *self._last_hooks])

    @property
    def checkpoint_dir(self) -> Path:
        return self.checkpointer.directory

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Add ``hooks`` in the given order, after the hooks registered so far, before ``stop_on_signal``."""
        super().register_hooks(hooks)
        for hook in self._last_hooks:  # back to the end
            self.hooks.remove(hook)
            self.hooks.append(hook)

    def save_checkpoint(self, name: str) -> Path:
        """Write ``checkpoints/<name>`` (all ranks call it; rank 0 writes)."""
        return self.checkpointer.save(name)

    def load_checkpoint_state(self, ckpt: dict[str, Any]) -> None:
        """Restore a checkpoint this trainer wrote; the next ``train()`` continues where it stopped."""
        self.checkpointer.load(ckpt)
