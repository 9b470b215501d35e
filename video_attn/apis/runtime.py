"""What every entry point sets up: processes and device, logging, seeds, autocast dtype, the model."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from video_attn.config.loader import config_from_dict
from video_attn.config.schema import Config, ConfigError
from video_attn.engine import distributed as du
from video_attn.engine.checkpoint import CheckpointError, load_checkpoint, model_state_from_checkpoint
from video_attn.engine.cpu_threads import set_num_threads
from video_attn.engine.logger import setup_logging
from video_attn.models import build_model

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def init_process(cfg: Config) -> tuple[torch.device, du.DistInfo]:
    """Resolve ``cfg.device``, join the process group ``torchrun`` describes (if any), set cudnn
    autotuning."""
    device = du.resolve_device(cfg.device)
    info = du.init_distributed(device)
    device = du.local_device(device, info)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    return device, info


def setup_run(cfg: Config, log_name: str | None) -> tuple[torch.device, du.DistInfo]:
    """:func:`init_process`, then logging (to ``<work_dir>/<log_name>`` too, when given), then torch's CPU
    thread count (:func:`~video_attn.engine.cpu_threads.set_num_threads`)."""
    device, info = init_process(cfg)
    setup_logging(Path(cfg.work_dir) / log_name if log_name else None, info.rank)
    set_num_threads(cfg.num_threads, cfg.data.num_workers)
    return device, info


# What a training run leaves in its work_dir that a new run must not destroy or mix with its own.
RUN_RESULTS = ("checkpoints", "tb", "metrics.json", "eval")  # eval: tools/eval.py outputs by default


def _run_results(work_dir: Path) -> list[str]:
    """An earlier run's results in ``work_dir``: files of ``checkpoints/`` and ``tb/``, ``metrics.json``."""
    found = []
    for name in RUN_RESULTS:
        path = work_dir / name
        if path.is_dir():
            found += sorted(str(p.relative_to(work_dir)) for p in path.rglob("*") if p.is_file())
        elif path.exists():
            found.append(name)
    return found


def prepare_work_dir(work_dir: str | Path, resume: bool, overwrite: bool) -> list[str]:
    """Check that a training run may write into ``work_dir``; with ``overwrite``, clear an earlier run.

    A fresh run (not ``resume``) into a ``work_dir`` that holds results of an earlier run
    (:data:`RUN_RESULTS`) raises ``ValueError`` naming ``--resume`` and ``--overwrite`` before anything is
    written. ``overwrite`` deletes those results and ``train.log`` instead and returns the deleted results.
    A ``train.log`` alone (a run that stopped before training) is no result: the new run's log replaces it.
    A collective call under ``torchrun``: rank 0 decides (and deletes) and every rank gets its answer, so all
    ranks raise or none does.
    """
    if resume and overwrite:
        raise ValueError("--resume continues the run in work_dir, --overwrite deletes it: give one of them")
    if resume:
        return []
    work_dir = Path(work_dir)
    found = _run_results(work_dir) if du.is_main_process() else []
    if found and overwrite and du.is_main_process():
        for name in (*RUN_RESULTS, "train.log"):
            path = work_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    found = du.broadcast_object(found)
    if found and not overwrite:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise ValueError(
            f"work_dir {work_dir} holds the results of an earlier run ({shown}); continue that run with "
            "--resume, or start over with --overwrite (deletes them) or another work_dir=DIR"
        )
    return found


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (model init, dropout)."""
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


def build_model_on(cfg: Config, device: torch.device) -> nn.Module:
    """``cfg.model`` on ``device`` (channels-last on CUDA when ``train.channels_last``)."""
    model = build_model(cfg.model).to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def config_for_checkpoint(cfg: Config, ckpt: dict, checkpoint: str | Path) -> Config:
    """A copy of ``cfg`` that rebuilds the model of the loaded checkpoint ``ckpt`` (read from ``checkpoint``).

    An unset ``model.num_classes`` is taken from the config stored in the checkpoint (training stores the
    resolved value); without one it is a ``ConfigError``. ``model.backbone.pretrained`` is cleared: every
    weight comes from the checkpoint, so the ImageNet file the training started from is not needed.
    """
    cfg = config_from_dict(cfg.to_dict())
    cfg.model.backbone.pretrained = None
    if cfg.model.num_classes is None:
        stored = ckpt.get("config") or {}
        num_classes = (stored.get("model") or {}).get("num_classes")
        if num_classes is None:
            raise ConfigError(
                f"model.num_classes is not set and {checkpoint} stores no config holding it; "
                "set model.num_classes to the size of its classifier"
            )
        cfg.model.num_classes = int(num_classes)
    return cfg


def load_model_for_eval(cfg: Config, checkpoint: str | Path, device: torch.device) -> nn.Module:
    """Build ``cfg.model`` and load the weights of ``checkpoint`` (strict; ``module.`` prefixes stripped);
    an unset ``model.num_classes`` comes from the checkpoint (:func:`config_for_checkpoint`)."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    return model_from_checkpoint(config_for_checkpoint(cfg, ckpt, checkpoint), ckpt, checkpoint, device)


def model_from_checkpoint(cfg: Config, ckpt: dict, checkpoint: str | Path, device: torch.device) -> nn.Module:
    """``cfg.model`` on ``device`` in eval mode with the weights of the loaded checkpoint ``ckpt`` (strict);
    ``cfg`` as :func:`config_for_checkpoint` returns it, ``checkpoint`` names the file in errors."""
    state = model_state_from_checkpoint(ckpt, checkpoint)
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
