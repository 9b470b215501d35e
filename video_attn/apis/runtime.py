"""What every entry point sets up: processes and device, logging, seeds, autocast dtype, the model."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from video_attn.config.loader import config_from_dict
from video_attn.config.schema import Config
from video_attn.engine import distributed as du
from video_attn.engine.checkpoint import CheckpointError, load_checkpoint, model_state_from_checkpoint
from video_attn.engine.logger import setup_logging
from video_attn.models import build_model

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def setup_run(cfg: Config, log_name: str | None) -> tuple[torch.device, du.DistInfo]:
    """Resolve ``cfg.device``, join the process group ``torchrun`` describes (if any), set up logging
    (to ``<work_dir>/<log_name>`` too, when given) and cudnn autotuning."""
    device = du.resolve_device(cfg.device)
    info = du.init_distributed(device)
    device = du.local_device(device, info)
    setup_logging(Path(cfg.work_dir) / log_name if log_name else None, info.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    return device, info


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
