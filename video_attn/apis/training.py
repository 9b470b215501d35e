"""``train(cfg)``: the entry point behind ``tools/train.py``."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from video_attn.config.schema import Config
from video_attn.engine.checkpoint import CheckpointError, load_checkpoint
from video_attn.engine.cpu_threads import restores_cpu_threads, set_num_threads
from video_attn.engine.finetune import FreezeHook, freeze_parts, init_from_checkpoint
from video_attn.engine.hooks import EvalHook, PeriodicCheckpointer, TemperatureHook
from video_attn.engine.logger import make_tb_writer, setup_logging
from video_attn.engine.lr_scheduler import build_scheduler
from video_attn.engine.optim import build_optimizer, scaled_lr
from video_attn.engine.trainer import Trainer
from video_attn.tasks import build_task

from .runtime import amp_dtype_for, build_model_on, init_process, prepare_work_dir, seed_everything

logger = logging.getLogger(__name__)


@restores_cpu_threads
def train(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train per ``cfg`` (validating every ``train.eval_every_epochs``); returns the last validation metrics.

    Writes ``<work_dir>/checkpoints/{last,best}.pt``, ``tb/``, ``train.log`` and ``metrics.json`` (rank 0).
    ``resume`` continues exactly from ``checkpoints/last.pt`` (mid-epoch included). A fresh run never destroys
    an earlier one: into a ``work_dir`` holding another run's results it raises ``ValueError`` before writing
    anything, unless ``overwrite`` (which deletes them; see :func:`~.runtime.prepare_work_dir`). Fine-tuning
    (``model.init_from``, ``train.freeze``): :mod:`video_attn.engine.finetune`. Works single-process or
    under ``torchrun``; bad input raises ``ValueError`` / ``CheckpointError`` before training starts.
    An unset ``model.num_classes`` is taken from the training set; the checkpoints' config holds the value
    (``cfg`` itself is left as given). torch's CPU thread count is set for the run (``num_threads``;
    :mod:`video_attn.engine.cpu_threads`) and the caller's restored when it returns.
    """
    cfg = copy.deepcopy(cfg)
    task = build_task(cfg)
    work_dir = Path(cfg.work_dir)
    last = work_dir / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {last}")
    device, info = init_process(cfg)
    # before the log file is opened: a fresh run must not write into an earlier run's outputs
    removed = prepare_work_dir(work_dir, resume, overwrite)
    setup_logging(work_dir / "train.log", info.rank, append=resume)
    set_num_threads(cfg.num_threads, cfg.data.num_workers)
    if removed:
        logger.info("--overwrite: deleted the outputs of the earlier run (%s)", ", ".join(removed))
    logger.info(
        "task %s, device %s, %d process(es), work_dir %s", task.name, device, info.world_size, work_dir
    )

    # The model is built with the same seed on every rank; training randomness then differs per rank.
    seed_everything(cfg.seed)
    train_set = task.build_train_dataset()  # sets an unset model.num_classes
    class_names = task.class_names(train_set)
    model = build_model_on(cfg, device)
    if cfg.model.init_from and resume:
        logger.info("model.init_from is not read: --resume restores the weights of %s", last)
    elif cfg.model.init_from:
        init_from_checkpoint(model, cfg.model.init_from)
    frozen_modules = freeze_parts(model, cfg.train.freeze)  # before the optimizer, which skips frozen weights
    seed_everything(cfg.seed + info.rank)
    pin = cfg.data.pin_memory and device.type == "cuda"
    loader = task.build_train_loader(train_set, info.rank, info.world_size, pin)
    amp = amp_dtype_for(cfg, device)
    val_splits = task.validation_splits()
    eval_hook = None
    if val_splits:
        val_loaders = task.build_eval_loaders(val_splits, info.rank, info.world_size, pin)
        eval_hook = EvalHook(
            lambda m: task.evaluate(m, val_loaders, device, amp),
            task.primary_metric,
            cfg.train.eval_every_epochs,
            work_dir,
        )
    else:
        logger.warning(
            "data.val.ann_file is not set: training without validation (no best.pt, no metrics.json)"
        )

    loss_fn, loss_module = task.build_loss(model, device)
    optimizer = build_optimizer(model, cfg.train, info.world_size)
    if loss_module is not None:  # e.g. the centre loss's centres, trained at the base lr without decay
        lr = scaled_lr(cfg.train, info.world_size)
        optimizer.add_param_group(
            {
                "params": list(loss_module.parameters()),
                "name": "loss",
                "lr": lr,
                "initial_lr": lr,
                "lr_mult": 1.0,
                "weight_decay": 0.0,
            }
        )
    steps_per_epoch = math.ceil(len(loader) / cfg.train.accumulation_steps)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch)
    epochs = cfg.train.num_epochs(steps_per_epoch)
    if cfg.train.iters > 0:
        logger.info("train.iters=%d: %d epochs of %d steps", cfg.train.iters, epochs, steps_per_epoch)

    train_model: nn.Module = model
    if info.distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if cfg.train.compile:
        train_model = torch.compile(train_model)

    tb = make_tb_writer(work_dir / "tb", info.rank)
    trainer = Trainer(
        train_model,
        optimizer,
        scheduler,
        loader,
        loss_fn,
        work_dir,
        epochs,
        device=device,
        unwrapped_model=model,
        accumulation_steps=cfg.train.accumulation_steps,
        clip_grad=cfg.train.clip_grad,
        amp_dtype=amp,
        log_every_iters=cfg.train.log_every_iters,
        config=cfg.to_dict(),
        tb_writer=tb,
        extra_modules={"loss": loss_module} if loss_module else None,
        class_names=class_names,
    )
    temperature = TemperatureHook(
        cfg.train.temperature_start, cfg.train.temperature_end, cfg.train.temperature_anneal_epochs
    )
    # the evaluator goes before the checkpointer, so last.pt records the best metric so far
    freeze = FreezeHook(frozen_modules) if frozen_modules else None
    hooks = [freeze, temperature, eval_hook, PeriodicCheckpointer(cfg.train.checkpoint_every_iters)]
    trainer.register_hooks([h for h in hooks if h is not None])
    if resume:
        ckpt = load_checkpoint(last, map_location="cpu")
        _warn_config_changes(ckpt.get("config"), cfg)
        trainer.load_checkpoint_state(ckpt)
    try:
        trainer.train()
    finally:
        if tb is not None:
            tb.close()
    metrics = (eval_hook.last_metrics if eval_hook else None) or {}
    if metrics:
        summary = ", ".join(f"{k}={v:.2f}" for k, v in metrics.items() if isinstance(v, float))
        logger.info("final validation (%s): %s", task.primary_metric, summary)
    return metrics


def _warn_config_changes(saved: dict | None, cfg: Config) -> None:
    if not saved:
        return

    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(flat(v, key + ".") if isinstance(v, dict) and k != "flip_label_map" else {key: v})
        return out

    a, b = flat(saved), flat(cfg.to_dict())
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if changed:
        logger.warning("resuming with config keys that differ from the checkpoint's: %s", ", ".join(changed))
