"""Inference over an evaluation loader, single-process or distributed, with per-item results by dataset index.

The tasks (``video_attn.tasks``) say what to compute per batch; :func:`inference_on_loader` runs it over the
loader and returns one row per dataset item. In distributed runs each rank processes its
``DistributedSampler(shuffle=False)`` share (padded with duplicates so all ranks see the same number of
batches); :func:`gather_by_index` collects every rank's rows, drops the padding duplicates and sorts them by
index, so results (and the metrics computed from them) equal the single-process ones exactly.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed as du
from .device import move_to_device

logger = logging.getLogger(__name__)

BatchStep = Callable[[dict[str, Any]], dict[str, np.ndarray]]


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in ``amp_dtype``, or no autocast (fp32) when it is None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def to_numpy(value: Any, dtype: Any = None) -> np.ndarray:
    """A tensor (floating point as float32) or a list as a NumPy array of ``dtype``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    return np.asarray(value, dtype=dtype)


def gather_by_index(local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate every rank's arrays (aligned with ``local["index"]``), drop duplicates, sort by index."""
    parts = du.all_gather_object(local)
    merged = {k: np.concatenate([p[k] for p in parts], axis=0) for k in local}
    _, first = np.unique(merged["index"], return_index=True)  # unique() also sorts by index
    return {k: v[first] for k, v in merged.items()}


@torch.no_grad()
def inference_on_loader(
    step: BatchStep, loader: DataLoader, device: torch.device, desc: str = "eval"
) -> dict[str, np.ndarray]:
    """``step(batch)`` on every batch (moved to ``device``), its rows for the whole dataset, sorted by index.

    ``step`` returns arrays with one row per item of the batch, among them ``index`` (the dataset row);
    the result holds each key's rows of all ranks, one per dataset item. The same on every rank.
    """
    show = du.is_main_process() and sys.stderr.isatty()
    rows: list[dict[str, np.ndarray]] = []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not show):
        rows.append(step(move_to_device(batch, device, non_blocking=device.type == "cuda")))
    if not rows:
        raise ValueError("the evaluation loader yielded no batch")
    local = {k: np.concatenate([r[k] for r in rows], axis=0) for k in rows[0]}
    return gather_by_index(local)
