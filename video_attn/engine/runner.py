"""Entry points behind ``tools/train.py``, ``tools/eval.py`` and ``tools/extract_features.py``.

Each function takes a resolved config, works single-process or under ``torchrun`` (the process group comes
from the environment), and raises clear exceptions (``ValueError``, ``CheckpointError``, ``ConfigError``)
for bad input before any long work starts; the tools turn them into one-line messages.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from video_attn.config.loader import config_from_dict
from video_attn.config.schema import Config
from video_attn.data.build import (
    build_dataset,
    build_eval_loader,
    build_train_loader,
    task_of,
    unwrap_dataset,
)

from . import distributed as du
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, model_state_from_checkpoint
from .evaluator import (
    evaluate_action,
    evaluate_reid,
    extract_reid_features,
    infer_action,
    reid_eval_batch_size,
)
from .hooks import EvalHook, PeriodicCheckpointer, TemperatureHook, write_json_atomic
from .logger import make_tb_writer, setup_logging
from .lr_scheduler import build_scheduler
from .optim import build_optimizer, scaled_lr
from .trainer import Trainer

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype_for(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. AMP is a CUDA feature here; on CPU it is off (logged)."""
    if not cfg.train.amp:
        return None
    if device.type != "cuda":
        logger.info("train.amp is set but the device is %s: running in fp32", device.type)
        return None
    if cfg.train.amp_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        logger.warning("this GPU has no bfloat16 support: using float16 with gradient scaling")
        return torch.float16
    return AMP_DTYPES[cfg.train.amp_dtype]


def _setup(cfg: Config, log_name: str | None) -> tuple[torch.device, du.DistInfo]:
    device = du.resolve_device(cfg.device)
    info = du.init_distributed(device)
    device = du.local_device(device, info)
    log_file = Path(cfg.work_dir) / log_name if log_name else None
    setup_logging(log_file, info.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    return device, info


def build_model_on(cfg: Config, device: torch.device) -> nn.Module:
    from video_attn.models import build_model

    model = build_model(cfg.model).to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


# ------------------------------------------------------------------------------------------ guards
def _dataset_labels(dataset: Any) -> np.ndarray | None:
    for name in ("labels", "targets"):
        value = getattr(dataset, name, None)
        if value is not None:
            return np.asarray(value, dtype=np.int64).reshape(-1)
    samples = getattr(dataset, "samples", None)
    if samples is not None and len(samples) and isinstance(samples[0], (tuple, list)):
        return np.asarray([s[-1] for s in samples], dtype=np.int64)
    return None


def check_train_data(dataset: Any, cfg: Config) -> None:
    """Clear errors before training for an empty dataset or a class count that does not match the data."""
    n = len(dataset)
    if n == 0:
        raise ValueError(
            f"the training dataset is empty (data.root={cfg.data.root!r}, format {cfg.data.format})"
        )
    num_classes = cfg.model.num_classes
    if task_of(cfg) == "reid":
        num_ids = int(getattr(dataset, "num_ids", -1))
        if num_ids != num_classes:
            raise ValueError(
                f"model.num_classes={num_classes} but the ReID training set has {num_ids} identities; "
                f"set model.num_classes={num_ids}"
            )
        return
    labels = _dataset_labels(dataset)
    if labels is None:
        logger.warning("the training dataset exposes no labels: class count not checked before training")
        return
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(
            f"model.num_classes={num_classes} but the training labels span [{labels.min()}, {labels.max()}] "
            f"({bad.size} samples outside [0, {num_classes})); fix model.num_classes or the annotation file"
        )


def build_train_dataset(cfg: Config) -> Any:
    """The training set, checked by :func:`check_train_data`.

    The action builders drop (and warn about) rows whose label is outside ``[0, model.num_classes)``; in
    training that would hide a wrong ``model.num_classes`` behind a silently smaller dataset, so the set is
    built without that filter and any such label is an error before training starts.
    """
    if task_of(cfg) == "action":
        probe = config_from_dict(cfg.to_dict())
        probe.model.num_classes = 2**31 - 1
        dataset = build_dataset(probe, "train")
    else:
        dataset = build_dataset(cfg, "train")
    check_train_data(dataset, cfg)
    return dataset


# ----------------------------------------------------------------------------------------- losses
def build_loss_fn(cfg: Config, model: nn.Module, device: torch.device) -> tuple[Callable, nn.Module | None]:
    """``(outputs, batch) -> (loss, parts)`` for the task, and the loss module when it has state (centres)."""
    if task_of(cfg) == "action":
        smoothing = cfg.train.loss.label_smoothing

        def action_loss(logits: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
            loss = F.cross_entropy(logits.float(), batch["label"], label_smoothing=smoothing)
            return loss, {}

        return action_loss, None

    from video_attn.models.losses import build_reid_loss

    feat_dim = getattr(model, "feat_dim", None)
    criterion = build_reid_loss(cfg.train, num_classes=cfg.model.num_classes, feat_dim=feat_dim).to(device)

    def reid_loss(outputs: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise TypeError("a ReID model in train mode must return (logits, features)")
        logits, feats = outputs
        total, parts = criterion(logits.float(), feats.float(), batch["pid"])
        return total, {k: float(v) for k, v in parts.items()}

    has_state = any(True for _ in criterion.parameters())
    return reid_loss, (criterion if has_state else None)


# ------------------------------------------------------------------------------------------- train
def _eval_fn(
    cfg: Config, device: torch.device, info: du.DistInfo, amp: torch.dtype | None
) -> tuple[Callable, str]:
    pin = cfg.data.pin_memory and device.type == "cuda"
    if task_of(cfg) == "action":
        val_ds = build_dataset(cfg, "val")
        loader = build_eval_loader(val_ds, cfg, rank=info.rank, world_size=info.world_size, pin_memory=pin)
        return (lambda model: evaluate_action(model, loader, cfg, device, amp)), "top1"
    bs = reid_eval_batch_size(cfg)
    q = build_eval_loader(build_dataset(cfg, "query"), cfg, bs, info.rank, info.world_size, pin)
    g = build_eval_loader(build_dataset(cfg, "gallery"), cfg, bs, info.rank, info.world_size, pin)
    return (lambda model: evaluate_reid(model, q, g, cfg, device, amp)), "mAP"


def train(cfg: Config, resume: bool = False) -> dict[str, Any]:
    """Train per ``cfg`` (validating every ``train.eval_every_epochs``); returns the last validation metrics.

    Writes ``<work_dir>/checkpoints/{last,best}.pt``, ``tb/``, ``train.log`` and ``metrics.json`` (rank 0).
    ``resume`` continues exactly from ``checkpoints/last.pt`` (mid-epoch included).
    """
    device, info = _setup(cfg, "train.log")
    work_dir = Path(cfg.work_dir)
    last = work_dir / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {last}")
    logger.info(
        "task %s, device %s, %d process(es), work_dir %s", task_of(cfg), device, info.world_size, work_dir
    )

    # The model is built with the same seed on every rank; training randomness then differs per rank.
    seed_everything(cfg.seed)
    train_ds = build_train_dataset(cfg)
    model = build_model_on(cfg, device)
    seed_everything(cfg.seed + info.rank)
    pin = cfg.data.pin_memory and device.type == "cuda"
    loader = build_train_loader(train_ds, cfg, info.rank, info.world_size, pin_memory=pin)
    amp = amp_dtype_for(cfg, device)
    validate = task_of(cfg) == "reid" or bool(cfg.data.val.ann_file)
    if not validate:
        logger.warning(
            "data.val.ann_file is not set: training without validation (no best.pt, no metrics.json)"
        )
    eval_fn, metric = _eval_fn(cfg, device, info, amp) if validate else (None, "top1")

    loss_fn, loss_module = build_loss_fn(cfg, model, device)
    optimizer = build_optimizer(model, cfg.train, info.world_size)
    if loss_module is not None:
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

    train_model: nn.Module = model
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
        )
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
        cfg.train.epochs,
        device=device,
        unwrapped_model=model,
        accumulation_steps=cfg.train.accumulation_steps,
        clip_grad=cfg.train.clip_grad,
        amp_dtype=amp,
        log_every_iters=cfg.train.log_every_iters,
        config=cfg.to_dict(),
        tb_writer=tb,
        extra_modules={"loss": loss_module} if loss_module else None,
    )
    eval_hook = EvalHook(eval_fn, metric, cfg.train.eval_every_epochs, work_dir) if eval_fn else None
    temperature = TemperatureHook(
        cfg.train.temperature_start, cfg.train.temperature_end, cfg.train.temperature_anneal_epochs
    )
    # the evaluator goes before the checkpointer, so last.pt records the best metric so far
    hooks = [temperature, eval_hook, PeriodicCheckpointer(cfg.train.checkpoint_every_iters)]
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
        logger.info("final validation (%s): %s", metric, summary)
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


# -------------------------------------------------------------------------------------------- eval
def load_model_for_eval(cfg: Config, checkpoint: str | Path, device: torch.device) -> nn.Module:
    """Build ``cfg.model`` and load the weights of ``checkpoint`` (strict; ``module.`` prefixes stripped)."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    state = model_state_from_checkpoint(ckpt, checkpoint)
    # every weight comes from the checkpoint: do not require the ImageNet file the training started from
    cfg = config_from_dict(cfg.to_dict())
    cfg.model.backbone.pretrained = None
    model = build_model_on(cfg, device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise CheckpointError(
            f"{checkpoint} does not fit model {cfg.model.arch} (num_classes={cfg.model.num_classes}, "
            f"depth={cfg.model.backbone.depth}): {' '.join(lines[:3])[:400]}"
        ) from None
    model.eval()
    return model


def default_action_split(cfg: Config) -> str:
    return "test" if cfg.data.test.ann_file else "val"


def evaluate(cfg: Config, checkpoint: str | Path, split: str | None = None) -> dict[str, Any]:
    """Metrics of ``checkpoint`` (action: ``split``, default test else val; ReID: query vs gallery)."""
    device, info = _setup(cfg, None)
    model = load_model_for_eval(cfg, checkpoint, device)
    amp = amp_dtype_for(cfg, device)
    pin = cfg.data.pin_memory and device.type == "cuda"
    if task_of(cfg) == "action":
        split = split or default_action_split(cfg)
        loader = build_eval_loader(
            build_dataset(cfg, split), cfg, rank=info.rank, world_size=info.world_size, pin_memory=pin
        )
        metrics = evaluate_action(model, loader, cfg, device, amp)
        metrics["split"] = split
        metrics["average"] = cfg.eval.average
    else:
        bs = reid_eval_batch_size(cfg)
        q = build_eval_loader(build_dataset(cfg, "query"), cfg, bs, info.rank, info.world_size, pin)
        g = build_eval_loader(build_dataset(cfg, "gallery"), cfg, bs, info.rank, info.world_size, pin)
        metrics = evaluate_reid(model, q, g, cfg, device, amp)
        metrics["test_mode"] = cfg.eval.test_mode
    metrics["checkpoint"] = str(checkpoint)
    metrics["world_size"] = info.world_size
    return metrics


# ----------------------------------------------------------------------------------------- features
def extract_features(
    cfg: Config, checkpoint: str | Path, split: str, out: str | Path | None
) -> dict[str, np.ndarray]:
    """Embeddings of every item of ``split``, written to ``out`` (.npz, no pickled objects) by rank 0.

    Arrays: ``features`` float32 (N, D); action: ``labels``; ReID: ``pids``, ``camids``; ``paths`` (unicode
    array: the video path, or a tracklet's first frame path), ``num_frames`` int64 (-1 where unknown without
    decoding, i.e. video files), ``valid`` bool, ``index``. Action features are the classifier inputs
    averaged over segments and views.
    """
    device, info = _setup(cfg, None)
    model = load_model_for_eval(cfg, checkpoint, device)
    amp = amp_dtype_for(cfg, device)
    pin = cfg.data.pin_memory and device.type == "cuda"
    dataset = build_dataset(cfg, split)
    if task_of(cfg) == "action":
        loader = build_eval_loader(dataset, cfg, rank=info.rank, world_size=info.world_size, pin_memory=pin)
        res = infer_action(model, loader, device, cfg.eval.average, amp, features=True)
        arrays: dict[str, np.ndarray] = {"features": res["scores"].astype(np.float32), "labels": res["label"]}
        valid = res["valid"]
    else:
        bs = reid_eval_batch_size(cfg)
        loader = build_eval_loader(dataset, cfg, bs, info.rank, info.world_size, pin)
        res = extract_reid_features(model, loader, device, amp)
        ds = unwrap_dataset(loader)
        arrays = {
            "features": res["features"].astype(np.float32),
            "pids": np.asarray(ds.pids, dtype=np.int64)[res["index"]],
            "camids": np.asarray(ds.camids, dtype=np.int64)[res["index"]],
        }
        valid = res["valid"]
    ds = unwrap_dataset(dataset)
    index = res["index"]
    arrays["paths"] = np.asarray([str(p) for p in _item_paths(ds, index)], dtype=np.str_)
    arrays["num_frames"] = _item_num_frames(ds, index)
    arrays["valid"] = valid.astype(bool)
    arrays["index"] = index.astype(np.int64)
    if out is not None and info.is_main:
        write_npz_atomic(out, arrays)
        logger.info("wrote %d x %d features of split %s to %s", *arrays["features"].shape, split, out)
    du.barrier()
    return arrays


def _item_paths(ds: Any, index: np.ndarray) -> list[str]:
    """ReID: ``ds.paths`` (first frame per tracklet); action: the records' video path / frame folder."""
    paths = getattr(ds, "paths", None)
    if paths is None and getattr(ds, "records", None) is not None:
        paths = [getattr(r, "path", "") for r in ds.records]
    if paths is None:
        return [""] * len(index)
    return [str(paths[i]) for i in index]


def _item_num_frames(ds: Any, index: np.ndarray) -> np.ndarray:
    """Frames per item where the dataset knows them without decoding (tracklets, frame lists), else -1."""
    nf = getattr(ds, "num_frames", None)
    if nf is not None and not callable(nf):
        return np.asarray(nf, dtype=np.int64)[index]
    records = getattr(ds, "records", None)
    if records is not None:
        counts = [getattr(records[i], "num_frames", None) for i in index]
        return np.asarray([-1 if c is None else c for c in counts], dtype=np.int64)
    return np.full(len(index), -1, dtype=np.int64)


def write_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` written atomically; arrays only (no object arrays: loadable with allow_pickle=False)."""
    for name, value in arrays.items():
        if value.dtype == object:
            raise TypeError(f"feature file array {name!r} has dtype object; it would need pickle")
    atomic_write(path, lambda f: np.savez(f, **arrays))


def write_metrics_json(path: str | Path, metrics: dict[str, Any]) -> None:
    write_json_atomic(path, metrics)
