"""The epoch-based training loop and the base class of its hooks (the shape of detectron2's ``TrainerBase``).

:class:`TrainLoop` runs epochs of optimiser steps and calls every registered hook, in registration order, at
fixed points::

    before_train
    for each epoch:   before_epoch
        for each step:    before_step, run_step (forward, loss, backward, optimiser step), after_step
                      after_epoch
    after_train       (also when the run stops early)

Everything else (LR schedule, logging, checkpoints, evaluation, signals) is a hook; see
:mod:`video_attn.engine.hooks` for the hooks and their default order.

Counters: ``epoch`` (0-based), ``inner_iter`` (batches done in the current epoch) and ``iter`` (optimiser
steps done in the whole run). With ``accumulation_steps = k`` one step consumes k batches (fewer at the end of
an epoch), so ``after_step`` hooks, and the checkpoints they write, always sit on a step boundary.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import distributed as du
from .device import move_to_device

if TYPE_CHECKING:
    from .checkpoint import TrainingCheckpointer

logger = logging.getLogger(__name__)

# (model outputs, batch) -> (loss, named loss parts for logging)
LossFn = Callable[[Any, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the run stopped before the backward pass, so no bad weights exist."""


class HookBase:
    """A hook of :class:`TrainLoop`: override any of the six call points and, for state, the state methods.

    ``name`` (a class attribute) is the hook's key in checkpoints: its ``state_dict()`` is saved under
    ``checkpoint["hooks"][name]`` and given back to the hook of the same name on resume. ``self.trainer`` is
    set by :meth:`TrainLoop.register_hooks`. Hooks run on every rank; one that writes files checks
    ``trainer.is_main``, and those that run collectives do so on all ranks.
    """

    name: str = ""
    trainer: TrainLoop

    def before_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def before_step(self) -> None:
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


@dataclass(frozen=True)
class StepRecord:
    """What one optimiser step did on this rank, for the hooks that log it (``trainer.last_step``)."""

    loss: float  # mean over the step's batches
    parts: dict[str, float]  # the loss function's named parts, mean over the step's batches
    batches: int
    samples: int
    num_failed: int  # samples of the step's batches that failed to load and were replaced
    data_time: float  # seconds spent waiting for the loader
    step_time: float  # seconds of the whole step, data included
    grad_norm: float | None  # total norm before clipping; None without train.clip_grad


class TrainLoop:
    """Runs ``max_epochs`` epochs of ``loss_fn(model(batch["clip"]), batch)`` minimisation with hooks.

    Args:
        model: the model that runs the forward pass, possibly wrapped in DDP / compiled.
        optimizer: stepped once per ``accumulation_steps`` batches.
        train_loader: a loader from ``video_attn.data.build.build_train_loader`` (its batch sampler has
            ``set_epoch`` and ``skip_batches``, which make mid-epoch resumption exact).
        loss_fn: ``(outputs, batch) -> (loss, parts)``; ``parts`` are floats for logging.
        max_epochs: the run's length.
        device: where batches are moved.
        unwrapped_model: the plain module under ``model`` (its parameters are clipped and its weights saved);
            ``model`` itself by default.
        accumulation_steps: batches per optimiser step; each batch's loss is divided by it.
        clip_grad: max total gradient norm (``clip_grad_norm_``); None or 0: no clipping.
        amp_dtype: None for fp32; torch.bfloat16 or torch.float16 (fp16 scales the loss with a GradScaler).
        tb_writer: a TensorBoard ``SummaryWriter`` (rank 0) that :meth:`log_scalar` writes to, or None.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: DataLoader,
        loss_fn: LossFn,
        max_epochs: int,
        device: torch.device | str = "cpu",
        unwrapped_model: nn.Module | None = None,
        accumulation_steps: int = 1,
        clip_grad: float | None = None,
        amp_dtype: torch.dtype | None = None,
        tb_writer: Any = None,
    ) -> None:
        if accumulation_steps < 1:
            raise ValueError(f"train.accumulation_steps must be >= 1, got {accumulation_steps}")
        if clip_grad is not None and clip_grad < 0:
            raise ValueError(f"train.clip_grad must be positive (or null: no clipping), got {clip_grad}")
        self.model = model
        self.unwrapped_model = unwrapped_model if unwrapped_model is not None else model
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.loss_fn = loss_fn
        self.max_epochs = max_epochs
        self.device = torch.device(device)
        self.accumulation_steps = accumulation_steps
        self.clip_grad = clip_grad
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        self.tb_writer = tb_writer
        # Where hooks save checkpoints; the Trainer sets it (a TrainingCheckpointer needs the loop it saves).
        self.checkpointer: TrainingCheckpointer | None = None
        self.hooks: list[HookBase] = []
        self.rank = du.get_rank()
        self.world_size = du.get_world_size()
        self.epoch = 0
        self.inner_iter = 0
        self.iter = 0
        self.start_epoch = 0
        self.start_inner_iter = 0
        self.last_step: StepRecord | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_loader)

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Append ``hooks``; they run in the order registered. Names must be set and unique."""
        for hook in hooks:
            if not hook.name:
                raise ValueError(f"hook {type(hook).__name__} has no name; set the class attribute `name`")
            if any(h.name == hook.name for h in self.hooks):
                raise ValueError(f"a hook named {hook.name!r} is already registered")
            # a weak reference: hooks and loop do not own each other, so the loop (and its loader's workers)
            # goes as soon as the caller drops it, not at a later garbage collection
            hook.trainer = weakref.proxy(self)
            self.hooks.append(hook)

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        """A TensorBoard scalar (rank 0, when a writer is set)."""
        if self.tb_writer is not None and self.is_main:
            self.tb_writer.add_scalar(tag, value, step)

    # ------------------------------------------------------------------------------------------ loop
    def train(self) -> None:
        """Run from ``start_epoch`` / ``start_inner_iter`` (0, or where :meth:`load_state_dict` left them)."""
        try:
            for h in self.hooks:
                h.before_train()
            for epoch in range(self.start_epoch, self.max_epochs):
                self.epoch = epoch
                for h in self.hooks:
                    h.before_epoch()
                self.run_epoch()
                for h in self.hooks:
                    h.after_epoch()
        finally:
            for h in self.hooks:
                try:
                    h.after_train()
                except Exception:  # the others still run; an exception already raised is the one to see
                    logger.exception("hook %r failed in after_train", h.name)

    def run_epoch(self) -> None:
        batch_sampler = self.train_loader.batch_sampler
        batch_sampler.set_epoch(self.epoch)
        self.inner_iter = self.start_inner_iter if self.epoch == self.start_epoch else 0
        batch_sampler.skip_batches = self.inner_iter
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        batches = iter(self.train_loader)
        while self.inner_iter < self.batches_per_epoch:
            for h in self.hooks:
                h.before_step()
            self.last_step = self.run_step(batches)
            for h in self.hooks:
                h.after_step()

    def run_step(self, batches: Iterator[dict[str, Any]]) -> StepRecord:
        """One optimiser step: forward and backward over the step's batches, then clip and step."""
        start = time.perf_counter()
        k = self.accumulation_steps
        num_batches = min(k - self.inner_iter % k, self.batches_per_epoch - self.inner_iter)
        losses: list[float] = []
        parts_sum: dict[str, float] = {}
        samples = num_failed = 0
        data_time = 0.0
        for i in range(num_batches):
            wait = time.perf_counter()
            batch = next(batches)
            data_time += time.perf_counter() - wait
            batch = move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
            # DDP all-reduces gradients in backward; only the step's last batch needs it
            loss, parts = self.forward_backward(batch, sync_grads=i == num_batches - 1)
            self.inner_iter += 1
            losses.append(loss)
            for name, value in parts.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + value
            samples += int(batch["clip"].shape[0])
            num_failed += int(torch.as_tensor(batch.get("num_failed", 0)).sum())
        grad_norm = self.optimizer_step()
        self.iter += 1
        return StepRecord(
            loss=sum(losses) / num_batches,
            parts={name: value / num_batches for name, value in parts_sum.items()},
            batches=num_batches,
            samples=samples,
            num_failed=num_failed,
            data_time=data_time,
            step_time=time.perf_counter() - start,
            grad_norm=grad_norm,
        )

    def forward_backward(self, batch: dict[str, Any], sync_grads: bool) -> tuple[float, dict[str, float]]:
        """``loss_fn(model(clip), batch)`` under autocast; backward of ``loss / accumulation_steps``."""
        no_sync = getattr(self.model, "no_sync", None)
        grad_sync = no_sync() if no_sync is not None and not sync_grads else contextlib.nullcontext()
        with grad_sync:
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
            ):
                outputs = self.model(batch["clip"])
                loss, parts = self.loss_fn(outputs, batch)
            self.check_finite(loss)
            self.scaler.scale(loss / self.accumulation_steps).backward()
        return float(loss.detach()), {name: float(value) for name, value in parts.items()}

    def check_finite(self, loss: torch.Tensor) -> None:
        """Raise :class:`NonFiniteLossError` on every rank when the loss is NaN/inf on any rank."""
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self.world_size > 1:
            bad = du.all_reduce_sum(float(bad), self.device) > 0
        if bad:
            last = f"{self.checkpointer.directory / 'last.pt'}" if self.checkpointer else "not written"
            raise NonFiniteLossError(
                f"loss is {float(loss.detach())} at epoch {self.epoch + 1}, iteration {self.iter + 1} "
                f"(batch {self.inner_iter + 1} of the epoch); weights not saved; last good checkpoint is "
                f"{last}. Lower train.lr, enable train.clip_grad, or check the data."
            )

    def optimizer_step(self) -> float | None:
        """Unscale and clip (when ``clip_grad``), step, reset the gradients; returns the pre-clip norm."""
        grad_norm = None
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            grad_norm = float(nn.utils.clip_grad_norm_(self.unwrapped_model.parameters(), self.clip_grad))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The loop's progress and its hooks' states (keys of the training checkpoint)."""
        return {
            "epoch": self.epoch,
            "inner_iter": self.inner_iter,
            "iteration": self.iter,
            "batches_per_epoch": self.batches_per_epoch,
            "world_size": self.world_size,
            "sampler": {"epoch": self.epoch, "batches_done": self.inner_iter},
            "hooks": {h.name: h.state_dict() for h in self.hooks},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the step :meth:`state_dict` was taken at; hooks get their state by name."""
        if state.get("batches_per_epoch") not in (None, self.batches_per_epoch):
            raise ValueError(
                f"the checkpoint has {state['batches_per_epoch']} batches per epoch but this run has "
                f"{self.batches_per_epoch} (other data, batch size or process count); cannot resume exactly"
            )
        hook_states = state.get("hooks") or {}
        for h in self.hooks:
            if h.name in hook_states:
                h.load_state_dict(hook_states[h.name])
        self.iter = int(state["iteration"])
        epoch, done = int(state["epoch"]), int(state["inner_iter"])
        if done >= self.batches_per_epoch:
            epoch, done = epoch + 1, 0
        self.start_epoch, self.start_inner_iter = epoch, done
        self.epoch = epoch
        logger.info("resuming at epoch %d, batch %d (iteration %d)", epoch + 1, done, self.iter)
