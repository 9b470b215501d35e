"""``evaluate`` and ``extract_features``: the entry points behind ``tools/eval.py`` and
``tools/extract_features.py``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from video_attn.config.schema import Config
from video_attn.engine import distributed as du
from video_attn.engine.checkpoint import atomic_write, load_checkpoint, write_json_atomic
from video_attn.engine.cpu_threads import restores_cpu_threads
from video_attn.tasks import build_task

from .runtime import amp_dtype_for, config_for_checkpoint, model_from_checkpoint, setup_run

logger = logging.getLogger(__name__)


@restores_cpu_threads
def evaluate(
    cfg: Config, checkpoint: str | Path, split: str | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """Metrics of ``checkpoint`` under the test protocol of ``cfg``, the same on every rank.

    Action: ``split`` (default: test when ``data.test.ann_file`` is set, else val); ReID: query against
    gallery (no ``split``). The metrics come with the settings that produced them and ``checkpoint``,
    ``world_size``. An unset ``model.num_classes`` is taken from the checkpoint's config.

    ``out``: rank 0 writes the metrics there as JSON and the task's per-item outputs next to it, named after
    its stem (action, for ``out=eval/best.json``: ``eval/best_predictions.csv`` and ``.npz``,
    ``eval/best_confusion.npy`` and ``.png``, with the class names stored in the checkpoint).
    """
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    cfg = config_for_checkpoint(cfg, ckpt, checkpoint)
    task = build_task(cfg)
    splits = task.eval_splits(split)
    device, info = setup_run(cfg, None)
    model = model_from_checkpoint(cfg, ckpt, checkpoint, device)
    pin = cfg.data.pin_memory and device.type == "cuda"
    loaders = task.build_eval_loaders(splits, info.rank, info.world_size, pin)
    prefix = Path(out).with_suffix("") if out is not None else None
    amp = amp_dtype_for(cfg, device)
    metrics = task.evaluate(
        model, loaders, device, amp, output_prefix=prefix, class_names=ckpt.get("class_names")
    )
    metrics.update(task.eval_settings(splits))
    metrics["checkpoint"] = str(checkpoint)
    metrics["world_size"] = info.world_size
    if out is not None and info.is_main:
        write_json_atomic(out, metrics)
        logger.info("wrote %s", out)
    du.barrier()
    return metrics


@restores_cpu_threads
def extract_features(
    cfg: Config, checkpoint: str | Path, split: str, out: str | Path | None
) -> dict[str, np.ndarray]:
    """Embeddings of every item of ``split``, written to ``out`` (.npz, no pickled objects) by rank 0.

    Arrays: ``features`` float32 (N, D); action: ``labels``; ReID: ``pids``, ``camids``; ``paths`` (unicode
    array: the video path, or a tracklet's first frame path), ``num_frames`` int64 (-1 where unknown without
    decoding, i.e. video files), ``valid`` bool, ``index``. Action features are the classifier inputs
    averaged over segments and views. An unset ``model.num_classes`` is taken from the checkpoint's config.
    """
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    cfg = config_for_checkpoint(cfg, ckpt, checkpoint)
    task = build_task(cfg)
    if split not in task.splits:
        raise ValueError(f"split {split!r} is not a {task.name} split; valid: {', '.join(task.splits)}")
    device, info = setup_run(cfg, None)
    model = model_from_checkpoint(cfg, ckpt, checkpoint, device)
    pin = cfg.data.pin_memory and device.type == "cuda"
    loader = task.build_eval_loader(split, info.rank, info.world_size, pin)
    arrays = task.extract_features(model, loader, device, amp_dtype_for(cfg, device))
    if out is not None and info.is_main:
        write_feature_file(out, arrays)
        logger.info("wrote %d x %d features of split %s to %s", *arrays["features"].shape, split, out)
    du.barrier()
    return arrays


def write_feature_file(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` written atomically; arrays only (no object arrays: loadable with allow_pickle=False)."""
    for name, value in arrays.items():
        if value.dtype == object:
            raise TypeError(f"feature file array {name!r} has dtype object; it would need pickle")
    atomic_write(path, lambda f: np.savez(f, **arrays))
