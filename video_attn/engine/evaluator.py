"""Inference loops for evaluation and feature extraction, single-process or distributed.

Every loop returns per-sample results keyed by dataset index. In distributed runs each rank processes its
``DistributedSampler(shuffle=False)`` share (padded with duplicates so all ranks see the same number of
batches); :func:`gather_by_index` collects every rank's results, drops the padding duplicates and sorts by
index, so metrics equal the single-process metrics exactly.

Clip layouts: ``(N, T, 3, H, W)`` one view per item, ``(N, V, T, 3, H, W)`` multi-view (action clips x
crops, ReID dense clips). Action scores of the V views are averaged per ``cfg.eval.average`` (logits, the
official TAM test, or softmax, mmaction2); ReID dense-mode clip embeddings are averaged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from video_attn.config.schema import Config

from . import distributed as du
from .trainer import move_to_device

logger = logging.getLogger(__name__)


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def _batches(loader: DataLoader, device: torch.device, desc: str) -> Iterator[dict[str, Any]]:
    import sys

    from tqdm import tqdm

    disable = not (du.is_main_process() and sys.stderr.isatty())
    for batch in tqdm(loader, desc=desc, leave=False, disable=disable):
        yield move_to_device(batch, device, non_blocking=device.type == "cuda")


def gather_by_index(local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate every rank's arrays (aligned with ``local["index"]``), drop duplicates, sort by index."""
    parts = du.all_gather_object(local)
    merged = {k: np.concatenate([p[k] for p in parts], axis=0) for k in local}
    _, first = np.unique(merged["index"], return_index=True)  # unique() also sorts by index
    return {k: v[first] for k, v in merged.items()}


def _as_numpy(t: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        t = t.numpy()
    return np.asarray(t, dtype=dtype)


# --------------------------------------------------------------------------------------------- action
@torch.no_grad()
def infer_action(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    average: str = "logits",
    amp_dtype: torch.dtype | None = None,
    features: bool = False,
) -> dict[str, np.ndarray]:
    """Per-video scores (N, K) (pooled features (N, C) when ``features``) with label/index/valid, gathered.

    Features are the classifier's input averaged over segments and views.
    """
    from video_attn.evaluation.action import average_views

    model.eval()
    captured: list[torch.Tensor] = []
    handle = None
    if features:
        classifier = getattr(model, "classifier", None)
        if not isinstance(classifier, nn.Module):
            raise AttributeError("feature extraction needs model.classifier (its input is the feature)")
        handle = classifier.register_forward_pre_hook(lambda mod, args: captured.append(args[0].detach()))
    out: dict[str, list[np.ndarray]] = {"scores": [], "label": [], "index": [], "valid": []}
    try:
        for batch in _batches(loader, device, "eval"):
            clip = batch["clip"]
            n = clip.shape[0]
            views = clip.shape[1] if clip.dim() == 6 else 1
            with _autocast(device, amp_dtype):
                logits = model(clip.flatten(0, 1) if clip.dim() == 6 else clip)
            if features:
                feat = torch.cat(captured, dim=0).float()
                captured.clear()
                result = feat.reshape(n, -1, feat.shape[-1]).mean(dim=1)  # over views x segments
            else:
                result = average_views(logits.float().reshape(n, views, -1), average)
            out["scores"].append(_as_numpy(result, np.float32))
            out["label"].append(_as_numpy(batch["label"], np.int64).reshape(-1))
            out["index"].append(_as_numpy(batch["index"], np.int64).reshape(-1))
            out["valid"].append(_as_numpy(batch["valid"], bool).reshape(-1))
    finally:
        if handle is not None:
            handle.remove()
    local = {k: np.concatenate(v, axis=0) for k, v in out.items()}
    return gather_by_index(local)


def evaluate_action(
    model: nn.Module,
    loader: DataLoader,
    cfg: Config,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """``dict(top1, top5, mean_class_accuracy, num_videos, num_failed)`` in percent, same on every rank."""
    from video_attn.evaluation.action import ActionEvaluator

    res = infer_action(model, loader, device, cfg.eval.average, amp_dtype)
    evaluator = ActionEvaluator(num_classes=res["scores"].shape[1], average=cfg.eval.average)
    evaluator.update(res["scores"], res["label"], res["index"], res["valid"])
    metrics = evaluator.compute()
    metrics["num_videos"] = int(metrics["num_videos"])
    return metrics


# ----------------------------------------------------------------------------------------------- ReID
@torch.no_grad()
def extract_reid_features(
    model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None
) -> dict[str, np.ndarray]:
    """Per-tracklet embeddings (N, D) with index/valid (and num_frames seen), gathered and sorted by index."""
    model.eval()
    out: dict[str, list[np.ndarray]] = {"features": [], "index": [], "valid": [], "frames": []}
    # Whole tracklets have a different length each: cudnn autotuning would re-run for every new shape.
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        _extract_into(model, loader, device, amp_dtype, out)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    local = {k: np.concatenate(v, axis=0) for k, v in out.items()}
    return gather_by_index(local)


def _extract_into(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    out: dict[str, list[np.ndarray]],
) -> None:
    for batch in _batches(loader, device, "features"):
        clip = batch["clip"]
        n = clip.shape[0]
        with _autocast(device, amp_dtype):
            if clip.dim() == 6:  # dense mode: (N, clips, T, 3, H, W) -> mean of the clip embeddings
                emb = model(clip.flatten(0, 1)).float().reshape(n, clip.shape[1], -1).mean(dim=1)
                frames = clip.shape[1] * clip.shape[2]
            else:
                emb = model(clip).float()
                frames = clip.shape[1]
        out["features"].append(_as_numpy(emb, np.float32))
        out["index"].append(_as_numpy(batch["index"], np.int64).reshape(-1))
        out["valid"].append(_as_numpy(batch["valid"], bool).reshape(-1))
        out["frames"].append(np.full(n, frames, dtype=np.int64))


def reid_eval_batch_size(cfg: Config) -> int:
    """Tracklets differ in length in ``all`` mode, so are not batched: 1 there, else eval.batch_size."""
    return 1 if cfg.eval.test_mode == "all" else cfg.eval.batch_size


def evaluate_reid(
    model: nn.Module,
    query_loader: DataLoader,
    gallery_loader: DataLoader,
    cfg: Config,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """mAP / mINP / CMC in percent under ``cfg.eval.protocol``, same on every rank.

    Tracklets that failed to load (valid=False) are excluded (query and gallery) and counted in
    ``num_failed_query`` / ``num_failed_gallery``.
    """
    from video_attn.data.build import unwrap_dataset

    q = extract_reid_features(model, query_loader, device, amp_dtype)
    g = extract_reid_features(model, gallery_loader, device, amp_dtype)
    qds, gds = unwrap_dataset(query_loader), unwrap_dataset(gallery_loader)
    return reid_metrics_from_features(q, g, qds, gds, cfg)


def reid_metrics_from_features(
    q: dict[str, np.ndarray], g: dict[str, np.ndarray], query_ds: Any, gallery_ds: Any, cfg: Config
) -> dict[str, Any]:
    from video_attn.evaluation.reid import evaluate_features

    q_pids = np.asarray(query_ds.pids, dtype=np.int64)[q["index"]]
    q_camids = np.asarray(query_ds.camids, dtype=np.int64)[q["index"]]
    g_pids = np.asarray(gallery_ds.pids, dtype=np.int64)[g["index"]]
    g_camids = np.asarray(gallery_ds.camids, dtype=np.int64)[g["index"]]
    qv, gv = q["valid"], g["valid"]
    if (~qv).any() or (~gv).any():
        logger.warning(
            "excluding %d query and %d gallery tracklets that failed to load", (~qv).sum(), (~gv).sum()
        )
    qf, gf = q["features"][qv], g["features"][gv]
    q_pids, q_camids, g_pids, g_camids = q_pids[qv], q_camids[qv], g_pids[gv], g_camids[gv]
    ev = cfg.eval
    if ev.rerank:
        result = _evaluate_reranked(qf, gf, q_pids, g_pids, q_camids, g_camids, cfg)
    else:
        result = evaluate_features(
            torch.from_numpy(qf),
            torch.from_numpy(gf),
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            metric=ev.metric,
            normalize=ev.normalize,
            protocol=ev.protocol,
            max_rank=ev.max_rank,
        )
    cmc = np.asarray(result["cmc"], dtype=np.float64)
    metrics: dict[str, Any] = {
        "mAP": 100.0 * float(result["mAP"]),
        "mINP": 100.0 * float(result["mINP"]),
    }
    for r in (1, 5, 10, 20):
        metrics[f"rank{r}"] = 100.0 * float(cmc[r - 1]) if len(cmc) >= r else float("nan")
    metrics.update(
        num_query=int(len(qf)),
        num_gallery=int(len(gf)),
        num_valid_queries=int(result["num_valid_queries"]),
        num_skipped_queries=int(result["num_skipped_queries"]),
        num_failed_query=int((~qv).sum()),
        num_failed_gallery=int((~gv).sum()),
        protocol=ev.protocol,
        rerank=bool(ev.rerank),
    )
    return metrics


def _evaluate_reranked(qf, gf, q_pids, g_pids, q_camids, g_camids, cfg: Config) -> dict[str, Any]:
    """k-reciprocal re-ranking (Zhong et al.) on the feature distances, then the rank metrics."""
    from video_attn.evaluation import rerank as rr
    from video_attn.evaluation.reid import evaluate_rank

    ev = cfg.eval
    distmat = rr.re_ranking_features(
        torch.from_numpy(qf),
        torch.from_numpy(gf),
        k1=ev.rerank_k1,
        k2=ev.rerank_k2,
        lambda_value=ev.rerank_lambda,
        metric=ev.metric,
        normalize=ev.normalize,
    )
    return evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=ev.max_rank, protocol=ev.protocol
    )
