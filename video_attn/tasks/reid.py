"""Video person ReID: GLTR and the temporal baselines on MARS, DukeMTMC-VideoReID, iLIDS-VID and PRID.

Training: the ReID loss of ``train.loss`` (cross-entropy, optional batch-hard triplet and centre loss) on
(logits, features), PK batches when ``train.num_instances > 0``. Evaluation embeds every query and gallery
tracklet (``eval.test_mode``: ``all`` frames in one pass, the GLTR official test, hence batch size 1;
``dense`` clips, whose embeddings are averaged; ``evenly`` spread frames), leaves out tracklets that failed to
load, and reports mAP, mINP and CMC rank-1/5/10/20 in percent under ``eval.protocol`` (``mars_official``:
the MARS evaluation code; ``torchreid``: same-identity same-camera gallery items are junk), with
k-reciprocal re-ranking (Zhong et al., CVPR'17) when ``eval.rerank``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from video_attn.config.schema import EvalConfig
from video_attn.data.build import build_train_loader, unwrap_dataset
from video_attn.data.datasets.reid_build import REID_FORMATS, REID_SPLITS, build_reid_dataset
from video_attn.engine.evaluator import autocast, inference_on_loader, to_numpy
from video_attn.evaluation.reid import evaluate_features, evaluate_rank
from video_attn.evaluation.rerank import re_ranking_features
from video_attn.models import REID_ARCHS

from .base import LossFn, Task

logger = logging.getLogger(__name__)


class ReidTask(Task):
    name: ClassVar[str] = "reid"
    formats: ClassVar[tuple[str, ...]] = REID_FORMATS
    archs: ClassVar[tuple[str, ...]] = REID_ARCHS
    splits: ClassVar[tuple[str, ...]] = REID_SPLITS
    primary_metric: ClassVar[str] = "mAP"

    def build_dataset(self, split: str) -> Dataset:
        return build_reid_dataset(self.cfg, split)

    def check_train_data(self, dataset: Dataset) -> None:
        num_classes, num_ids = self.cfg.model.num_classes, int(dataset.num_ids)
        if num_ids != num_classes:
            raise ValueError(
                f"model.num_classes={num_classes} but the ReID training set has {num_ids} identities; "
                f"set model.num_classes={num_ids}"
            )

    def num_classes_of(self, dataset: Dataset) -> int:
        """The number of training identities (torchreid / fast-reid's ``num_classes``)."""
        return int(dataset.num_ids)

    def class_names(self, train_set: Dataset) -> list[str]:
        """The dataset's own pid of each classifier output (the training labels are the sorted pids,
        relabelled 0..K-1)."""
        return [str(pid) for pid in np.unique(train_set.orig_pids)]

    def build_train_loader(
        self, dataset: Dataset, rank: int = 0, world_size: int = 1, pin_memory: bool = False
    ) -> DataLoader:
        identity_sampler = self.cfg.train.num_instances > 0
        return build_train_loader(dataset, self.cfg, rank, world_size, pin_memory, identity_sampler)

    def eval_batch_size(self) -> int:
        """Whole tracklets (``eval.test_mode=all``) differ in length, so go one at a time; else
        ``eval.batch_size``."""
        return 1 if self.cfg.eval.test_mode == "all" else self.cfg.eval.batch_size

    def eval_splits(self, split: str | None = None) -> tuple[str, ...]:
        if split is not None:
            raise ValueError(f"split={split!r}: a ReID evaluation always ranks the gallery for each query")
        return ("query", "gallery")

    def validation_splits(self) -> tuple[str, ...]:
        return ("query", "gallery")

    def build_loss(self, model: nn.Module, device: torch.device) -> tuple[LossFn, nn.Module | None]:
        from video_attn.models.losses import build_reid_loss

        feat_dim = getattr(model, "feat_dim", None)
        criterion = build_reid_loss(self.cfg.train, num_classes=self.cfg.model.num_classes, feat_dim=feat_dim)
        criterion = criterion.to(device)

        def reid_loss(outputs: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
            if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
                raise TypeError("a ReID model in train mode must return (logits, features)")
            logits, feats = outputs
            total, parts = criterion(logits.float(), feats.float(), batch["pid"])
            return total, {k: float(v) for k, v in parts.items()}

        has_state = any(True for _ in criterion.parameters())
        return reid_loss, (criterion if has_state else None)

    def extract_features(
        self, model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None
    ) -> dict[str, np.ndarray]:
        """``features`` (N, D) per tracklet (dense mode: the mean of its clip embeddings), ``pids``,
        ``camids``, ``paths`` (first frame), ``num_frames`` (tracklet length), ``valid``, ``index``."""
        model.eval()

        def step(batch: dict[str, Any]) -> dict[str, np.ndarray]:
            clip = batch["clip"]  # (N, T, 3, H, W), or (N, V, T, 3, H, W) in dense mode
            n = clip.shape[0]
            with autocast(device, amp_dtype):
                emb = model(clip.flatten(0, 1) if clip.dim() == 6 else clip)
            return {
                "features": to_numpy(emb.float().reshape(n, -1, emb.shape[-1]).mean(dim=1), np.float32),
                "pids": to_numpy(batch["pid"], np.int64),
                "camids": to_numpy(batch["camid"], np.int64),
                "paths": np.asarray(batch["path"], dtype=np.str_),
                "valid": to_numpy(batch["valid"], bool),
                "index": to_numpy(batch["index"], np.int64),
            }

        # Whole tracklets have a different length each: cudnn autotuning would re-run for every new shape.
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = False
        try:
            arrays = inference_on_loader(step, loader, device, "features")
        finally:
            torch.backends.cudnn.benchmark = benchmark
        arrays["num_frames"] = np.asarray(unwrap_dataset(loader).num_frames, dtype=np.int64)[arrays["index"]]
        return arrays

    def evaluate(
        self,
        model: nn.Module,
        loaders: dict[str, DataLoader],
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        output_prefix: Path | None = None,
        class_names: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """mAP / mINP / CMC (percent) of the ``query`` loader's tracklets against the ``gallery`` loader's.

        No per-item outputs (``output_prefix``, ``class_names`` are unused): ranked lists come from
        ``tools/extract_features.py`` and ``tools/retrieve.py``.
        """
        query = self.extract_features(model, loaders["query"], device, amp_dtype)
        gallery = self.extract_features(model, loaders["gallery"], device, amp_dtype)
        return reid_metrics(query, gallery, self.cfg.eval, device)

    def eval_settings(self, splits: tuple[str, ...]) -> dict[str, Any]:
        return {"test_mode": self.cfg.eval.test_mode}


def reid_metrics(
    query: dict[str, np.ndarray],
    gallery: dict[str, np.ndarray],
    ev: EvalConfig,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Rank metrics of ``query`` against ``gallery`` (arrays ``features``, ``pids``, ``camids``, ``valid``),
    computed on ``device`` (the model's, in evaluation: distances, ranking and metrics run on the GPU there;
    default the CPU; re-ranking always runs on the CPU).

    Tracklets that failed to load (``valid`` False) are left out of both sides and counted in
    ``num_failed_query`` / ``num_failed_gallery``. CMC entries beyond ``eval.max_rank`` are NaN.
    """
    qv, gv = query["valid"], gallery["valid"]
    if (~qv).any() or (~gv).any():
        logger.warning(
            "excluding %d query and %d gallery tracklets that failed to load", (~qv).sum(), (~gv).sum()
        )
    qf, gf = torch.from_numpy(query["features"][qv]), torch.from_numpy(gallery["features"][gv])
    q_pids, q_camids = query["pids"][qv], query["camids"][qv]
    g_pids, g_camids = gallery["pids"][gv], gallery["camids"][gv]
    if ev.rerank:
        distmat = re_ranking_features(
            qf,
            gf,
            k1=ev.rerank_k1,
            k2=ev.rerank_k2,
            lambda_value=ev.rerank_lambda,
            metric=ev.metric,
            normalize=ev.normalize,
        )
        result = evaluate_rank(
            distmat, q_pids, g_pids, q_camids, g_camids, max_rank=ev.max_rank, protocol=ev.protocol
        )
    else:
        result = evaluate_features(
            qf,
            gf,
            q_pids,
            g_pids,
            q_camids,
            g_camids,
            metric=ev.metric,
            normalize=ev.normalize,
            protocol=ev.protocol,
            max_rank=ev.max_rank,
            device=device,
        )
    cmc = np.asarray(result["cmc"], dtype=np.float64)
    metrics: dict[str, Any] = {"mAP": 100.0 * float(result["mAP"]), "mINP": 100.0 * float(result["mINP"])}
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
