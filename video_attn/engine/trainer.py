"""A small epoch-based training loop with hooks, AMP, gradient accumulation/clipping and exact resumption.

Not a framework: :class:`Trainer` owns the loop (data -> forward -> loss -> backward -> step), the
checkpoint contents and the guards; everything periodic (evaluation, checkpoints, temperature annealing) is a
:class:`~video_attn.engine.hooks.HookBase`.

Counters: ``epoch`` (0-based), ``inner_iter`` (batches done in the current epoch) and ``iter`` (optimiser
steps done in the whole run). With ``accumulation_steps = k`` an optimiser step happens every k batches
(and on the last batch of an epoch); ``after_step`` hooks run after each optimiser step, so mid-epoch
checkpoints always sit on a step boundary.

Guards: a non-finite loss raises :class:`NonFiniteLossError` before any backward pass, so the weights and the
last checkpoint stay good. SIGINT (Ctrl-C) or SIGTERM sets a flag; at the next step boundary a checkpoint is
written and :class:`TrainingInterrupted` is raised. In distributed runs both flags are reduced over ranks
every step so all ranks stop at the same iteration.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import distributed as du
from .checkpoint import atomic_save, capture_rng_state, restore_rng_state
from .hooks import HookBase

logger = logging.getLogger(__name__)

LossFn = Callable[[Any, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the run stopped without writing the bad weights."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT was received; a checkpoint was written before stopping."""

    def __init__(self, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted; checkpoint {checkpoint}")
        self.checkpoint = checkpoint


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch


class Trainer:
    """Runs ``max_epochs`` epochs of ``loss_fn(model(batch["clip"]), batch)`` minimisation.

    Args:
        model: the model, possibly wrapped in DDP / compiled; ``unwrapped_model`` is saved.
        optimizer, scheduler: scheduler has ``step()`` per optimiser step and ``state_dict()``.
        train_loader: a loader from ``video_attn.data.build.build_train_loader`` (its batch sampler has
            ``set_epoch`` and ``skip_batches``).
        loss_fn: ``(outputs, batch) -> (loss, parts)``; ``parts`` are floats for logging.
        work_dir: where ``checkpoints/`` go (rank 0 writes).
        amp_dtype: None for fp32; torch.bfloat16 or torch.float16 (fp16 uses a GradScaler).
        config: the resolved config dict stored in every checkpoint.
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
    ) -> None:
        if accumulation_steps < 1:
            raise ValueError(f"train.accumulation_steps must be >= 1, got {accumulation_steps}")
        self.model = model
        self.unwrapped_model = unwrapped_model if unwrapped_model is not None else model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.loss_fn = loss_fn
        self.work_dir = Path(work_dir)
        self.max_epochs = max_epochs
        self.device = torch.device(device)
        self.accumulation_steps = accumulation_steps
        self.clip_grad = clip_grad
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        self.log_every_iters = max(1, log_every_iters)
        self.config = config
        self.tb_writer = tb_writer
        self.handle_sigint = handle_sigint
        self.extra_modules = dict(extra_modules or {})
        self.hooks: list[HookBase] = []
        self.rank = du.get_rank()
        self.world_size = du.get_world_size()
        self.epoch = 0
        self.inner_iter = 0
        self.iter = 0
        self.start_epoch = 0
        self.start_inner_iter = 0
        self.epoch_stats: dict[str, float] = {}
        self.last_data_time = 0.0
        self.last_step_time = 0.0
        self._sigint = False

    # ------------------------------------------------------------------------------------ properties
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_loader)

    @property
    def checkpoint_dir(self) -> Path:
        return self.work_dir / "checkpoints"

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        if self.tb_writer is not None and self.is_main:
            self.tb_writer.add_scalar(tag, value, step)

    # ------------------------------------------------------------------------------------------ loop
    def train(self) -> None:
        previous: dict[int, Any] = {}
        if self.handle_sigint:
            # SIGTERM too: torchrun and cluster schedulers stop workers with it before killing them
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                    previous[sig] = signal.signal(sig, self._on_sigint)
        try:
            for h in self.hooks:
                h.before_train()
            for epoch in range(self.start_epoch, self.max_epochs):
                self.epoch = epoch
                for h in self.hooks:
                    h.before_epoch()
                self._run_epoch()
                for h in self.hooks:
                    h.after_epoch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for h in self.hooks:
                with contextlib.suppress(Exception):
                    h.after_train()
            if self.tb_writer is not None:
                self.tb_writer.flush()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._sigint:  # a second Ctrl-C: stop immediately
            raise KeyboardInterrupt
        self._sigint = True
        name = signal.Signals(signum).name
        logger.warning("%s received: will write a checkpoint after the current step and stop", name)

    def _run_epoch(self) -> None:
        loader = self.train_loader
        batch_sampler = loader.batch_sampler
        batch_sampler.set_epoch(self.epoch)
        skip = self.start_inner_iter if self.epoch == self.start_epoch else 0
        batch_sampler.skip_batches = skip
        self.inner_iter = skip
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)

        total = self.batches_per_epoch
        stats = {
            "loss_sum": 0.0,
            "steps": 0,
            "samples": 0,
            "num_failed": 0,
            "data_time": 0.0,
            "step_time": 0.0,
        }
        parts_sum: dict[str, float] = {}
        progress = self._progress(total, skip)
        end = time.perf_counter()
        window = {"data": 0.0, "step": 0.0, "samples": 0}
        for batch in loader:
            data_time = time.perf_counter() - end
            batch = move_to_device(batch, self.device, non_blocking=self.device.type == "cuda")
            is_boundary = (self.inner_iter + 1) % self.accumulation_steps == 0 or self.inner_iter + 1 == total
            loss, parts = self._forward_backward(batch, sync=is_boundary)
            self.inner_iter += 1
            n = int(batch["clip"].shape[0])
            stats["samples"] += n
            stats["num_failed"] += int(torch.as_tensor(batch.get("num_failed", 0)).sum().item())
            stats["loss_sum"] += loss
            stats["steps"] += 1
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
            if is_boundary:
                self._optimizer_step()
            step_time = time.perf_counter() - end
            # the last batch's timing, for hooks and benchmarks (data wait vs whole step, seconds)
            self.last_data_time, self.last_step_time = data_time, step_time
            stats["data_time"] += data_time
            stats["step_time"] += step_time
            window["data"] += data_time
            window["step"] += step_time
            window["samples"] += n
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
            if is_boundary:
                if self.iter % self.log_every_iters == 0:
                    self._log_iteration(loss, parts, window)
                    window = {"data": 0.0, "step": 0.0, "samples": 0}
                for h in self.hooks:
                    h.after_step()
                self._check_interrupt()
            end = time.perf_counter()
        if progress is not None:
            progress.close()
        self._epoch_summary(stats, parts_sum)

    def _progress(self, total: int, initial: int) -> Any:
        if not (self.is_main and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(
            total=total, initial=initial, desc=f"epoch {self.epoch + 1}/{self.max_epochs}", leave=False
        )

    def _forward_backward(self, batch: dict[str, Any], sync: bool) -> tuple[float, dict[str, float]]:
        clip = batch["clip"]
        no_sync = getattr(self.model, "no_sync", None)
        ctx = no_sync() if (no_sync is not None and not sync) else contextlib.nullcontext()
        with ctx:
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
            ):
                outputs = self.model(clip)
                loss, parts = self.loss_fn(outputs, batch)
            self._check_finite(loss)
            self.scaler.scale(loss / self.accumulation_steps).backward()
        return float(loss.detach()), {k: float(v) for k, v in parts.items()}

    def _check_finite(self, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self.world_size > 1:
            bad = du.all_reduce_sum(float(bad), self.device) > 0
        if bad:
            raise NonFiniteLossError(
                f"loss is {float(loss.detach())} at epoch {self.epoch + 1}, iteration {self.iter + 1} "
                f"(batch {self.inner_iter + 1} of the epoch); weights not saved; last good "
                f"checkpoint is {self.checkpoint_dir / 'last.pt'}. Lower train.lr, enable train.clip_grad, "
                "or check the data."
            )

    def _optimizer_step(self) -> None:
        if self.clip_grad is not None and self.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.unwrapped_model.parameters(), self.clip_grad)
            self._last_grad_norm = float(grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.iter += 1

    def _check_interrupt(self) -> None:
        stop = self._sigint
        if self.world_size > 1:
            stop = du.all_reduce_sum(float(stop), self.device) > 0
        if stop:
            path = self.save_checkpoint("last.pt")
            logger.warning(
                "interrupted at epoch %d, iteration %d; checkpoint written to %s (resume with --resume)",
                self.epoch + 1,
                self.iter,
                path,
            )
            raise TrainingInterrupted(path)

    def _log_iteration(self, loss: float, parts: dict[str, float], window: dict[str, float]) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        throughput = window["samples"] * self.world_size / max(window["step"], 1e-9)
        data_frac = window["data"] / max(window["step"], 1e-9)
        logger.info(
            "epoch %d iter %d/%d (global %d) loss %.4f lr %.3e data %.1f%% %.1f clips/s",
            self.epoch + 1,
            self.inner_iter,
            self.batches_per_epoch,
            self.iter,
            loss,
            lr,
            100 * data_frac,
            throughput,
        )
        self.log_scalar("train/loss", loss, self.iter)
        for k, v in parts.items():
            self.log_scalar(f"train/{k}", v, self.iter)
        for group in self.optimizer.param_groups:
            self.log_scalar(f"lr/{group.get('name', 'group')}", group["lr"], self.iter)
        self.log_scalar("time/data_fraction", data_frac, self.iter)
        self.log_scalar("time/clips_per_s", throughput, self.iter)

    def _epoch_summary(self, stats: dict[str, float], parts_sum: dict[str, float]) -> None:
        steps = max(stats["steps"], 1)
        failed = int(du.all_reduce_sum(stats["num_failed"], self.device))
        self.epoch_stats = {
            "loss": stats["loss_sum"] / steps,
            "num_failed": failed,
            "data_time": stats["data_time"],
            "step_time": stats["step_time"],
            "clips_per_s": stats["samples"] * self.world_size / max(stats["step_time"], 1e-9),
        }
        parts_txt = " ".join(f"{k} {v / steps:.4f}" for k, v in parts_sum.items())
        logger.info(
            "epoch %d/%d done: loss %.4f %s| %d batches, %.1f clips/s, data %.1fs of %.1fs, "
            "failed/replaced samples %d",
            self.epoch + 1,
            self.max_epochs,
            self.epoch_stats["loss"],
            parts_txt + " " if parts_txt else "",
            stats["steps"],
            self.epoch_stats["clips_per_s"],
            stats["data_time"],
            stats["step_time"],
            failed,
        )
        self.log_scalar("epoch/loss", self.epoch_stats["loss"], self.epoch + 1)
        self.log_scalar("epoch/num_failed", failed, self.epoch + 1)
        self.log_scalar("epoch/clips_per_s", self.epoch_stats["clips_per_s"], self.epoch + 1)

    # ------------------------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly; RNG states of every rank (a collective call)."""
        rng_states = du.all_gather_object(capture_rng_state())
        return {
            "model": self.unwrapped_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "extra": {name: m.state_dict() for name, m in self.extra_modules.items()},
            "epoch": self.epoch,
            "inner_iter": self.inner_iter,
            "iteration": self.iter,
            "batches_per_epoch": self.batches_per_epoch,
            "world_size": self.world_size,
            "rng": rng_states,
            "sampler": {"epoch": self.epoch, "batches_done": self.inner_iter},
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks},
            "config": self.config,
        }

    def save_checkpoint(self, name: str) -> Path:
        """Write ``checkpoints/<name>`` atomically on rank 0 (all ranks call it: RNG states are gathered)."""
        state = self.checkpoint_state()
        path = self.checkpoint_dir / name
        if self.is_main:
            atomic_save(state, path)
            logger.debug("wrote %s (epoch %d, iteration %d)", path, self.epoch + 1, self.iter)
        du.barrier()
        return path

    def load_checkpoint_state(self, ckpt: dict[str, Any]) -> None:
        """Restore from :meth:`checkpoint_state` output; the next ``train()`` continues where it stopped."""
        self.unwrapped_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        extra = ckpt.get("extra") or {}
        for name, module in self.extra_modules.items():
            if name in extra:
                module.load_state_dict(extra[name])
        hook_states = ckpt.get("hooks") or {}
        for h in self.hooks:
            if type(h).__name__ in hook_states:
                h.load_state_dict(hook_states[type(h).__name__])
        self.iter = int(ckpt["iteration"])
        epoch, done = int(ckpt["epoch"]), int(ckpt["inner_iter"])
        if ckpt.get("batches_per_epoch") not in (None, self.batches_per_epoch):
            raise ValueError(
                f"the checkpoint has {ckpt['batches_per_epoch']} batches per epoch but this run has "
                f"{self.batches_per_epoch} (other data, batch size or process count); cannot resume exactly"
            )
        if done >= self.batches_per_epoch:
            epoch, done = epoch + 1, 0
        self.start_epoch, self.start_inner_iter = epoch, done
        self.epoch = epoch
        rng = ckpt.get("rng") or []
        if len(rng) == self.world_size:
            restore_rng_state(rng[self.rank])
        else:
            logger.warning(
                "checkpoint has RNG states of %d rank(s), this run has %d: RNG not restored",
                len(rng),
                self.world_size,
            )
        logger.info("resuming at epoch %d, batch %d (iteration %d)", epoch + 1, done, self.iter)
