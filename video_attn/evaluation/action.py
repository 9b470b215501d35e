"""Action recognition metrics: top-k accuracy, mean class accuracy, confusion matrix, multi-view averaging.

Conventions (pinned by tests/action):
- Scores are ranked with ties broken towards the lower class index (a stable descending sort), so the
  top-1 prediction equals ``argmax`` and a tie never counts as a hit for free.
- Top-k with fewer than k classes is top-(num_classes) (every label is then a hit), as mmaction2's
  ``top_k_accuracy``; the clamp is logged once per evaluator.
- Mean class accuracy is the mean over the classes present in the labels of each class's recall
  (mmaction2 ``mean_class_accuracy``); classes with no video do not count.
- Metrics are percentages (0-100), computed over the valid videos only; videos that failed to decode
  (``valid=False``) are excluded and reported as ``num_failed``.
- Multi-view test: the official TAM test averages logits over clips x crops; mmaction2 averages softmax
  probabilities. :func:`average_views` offers both (``cfg.eval.average``).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ActionEvaluator",
    "average_views",
    "confusion_matrix",
    "mean_class_accuracy",
    "save_confusion_matrix_png",
    "top_k_accuracy",
]

logger = logging.getLogger(__name__)


def average_views(scores: Tensor, mode: Literal["logits", "softmax"] = "logits") -> Tensor:
    """Average per-view class scores (N, V, K) -> (N, K).

    ``"logits"``: mean of the raw logits (official TAM test); ``"softmax"``: mean of the per-view softmax
    probabilities (mmaction2 ``average_clips="prob"``).
    """
    if scores.dim() != 3:
        raise ValueError(f"average_views expects scores of shape (N, V, K), got {tuple(scores.shape)}")
    if mode == "logits":
        return scores.mean(dim=1)
    if mode == "softmax":
        return scores.float().softmax(dim=-1).mean(dim=1)
    raise ValueError(f"average mode {mode!r}; valid: 'logits', 'softmax'")


def _ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of each true label: classes scoring higher, plus equal ones with a lower index."""
    true = scores[np.arange(len(labels)), labels][:, None]
    higher = (scores > true).sum(axis=1)
    cls = np.arange(scores.shape[1])[None, :]
    tied_before = ((scores == true) & (cls < labels[:, None])).sum(axis=1)
    return higher + tied_before


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, topk: Sequence[int] = (1, 5)) -> list[float]:
    """Fraction (0-1) of samples whose label is among the k best scores, for each k (k clamped to K)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return [float("nan")] * len(topk)
    ranks = _ranks(scores, labels)
    return [float((ranks < min(k, scores.shape[1])).mean()) for k in topk]


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean recall (0-1) over the classes that have at least one sample."""
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / support[present]).mean())


def save_confusion_matrix_png(
    cm: np.ndarray, path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> None:
    """Row-normalised confusion matrix image (matplotlib Agg backend, no display needed)."""
    # The object-oriented API with an explicit Agg canvas: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    support = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, support, out=np.zeros(cm.shape, dtype=np.float64), where=support > 0)
    k = cm.shape[0]
    size = min(4 + 0.25 * k, 40)
    fig = Figure(figsize=(size, size))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix (row-normalised)")
    if k <= 50:
        names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=90, fontsize=6)
        ax.set_yticks(range(k), names, fontsize=6)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120, format="png")


def _atomic_save(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


class ActionEvaluator:
    """Accumulates per-video scores and computes the action metrics.

    Args:
        num_classes: K.
        average: how :meth:`update` reduces multi-view scores (N, V, K): ``"logits"`` or ``"softmax"``.
        class_names: optional names for the confusion-matrix image.

    :meth:`update` takes one batch: ``scores`` (N, K) per video or (N, V, K) per view, ``labels`` (N,),
    ``indices`` (N,) dataset rows, ``valid`` (N,) bools. A video seen twice (e.g. DistributedSampler padding
    after a gather) is counted once. Scores of invalid videos are ignored; non-finite scores of a valid video
    are an error naming the dataset row (a diverged model must not give a silently wrong metric).
    """

    def __init__(
        self,
        num_classes: int,
        average: Literal["logits", "softmax"] = "logits",
        class_names: Sequence[str] | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if average not in ("logits", "softmax"):
            raise ValueError(f"average mode {average!r}; valid: 'logits', 'softmax'")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.average = average
        self.class_names = list(class_names) if class_names is not None else None
        self.reset()

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []
        self._valid: list[np.ndarray] = []

    @staticmethod
    def _to_numpy(value, dtype=None) -> np.ndarray:
        if isinstance(value, Tensor):
            value = value.detach().float().cpu().numpy() if value.is_floating_point() else value.cpu().numpy()
        return np.asarray(value, dtype=dtype)

    def update(self, scores, labels, indices, valid=None) -> None:
        if isinstance(scores, Tensor) and scores.dim() == 3:
            scores = average_views(scores, self.average)
        scores = self._to_numpy(scores)
        if scores.ndim == 3:
            scores = average_views(torch.from_numpy(scores), self.average).numpy()
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(
                f"scores must be (N, {self.num_classes}) or (N, V, {self.num_classes}), got {scores.shape}"
            )
        n = scores.shape[0]
        labels = self._to_numpy(labels, np.int64).reshape(-1)
        indices = self._to_numpy(indices, np.int64).reshape(-1)
        valid = np.ones(n, dtype=bool) if valid is None else self._to_numpy(valid, bool).reshape(-1)
        if not (len(labels) == len(indices) == len(valid) == n):
            raise ValueError(
                f"batch sizes differ: scores {n}, labels {len(labels)}, "
                f"indices {len(indices)}, valid {len(valid)}"
            )
        bad_label = valid & ((labels < 0) | (labels >= self.num_classes))
        if bad_label.any():
            i = int(np.flatnonzero(bad_label)[0])
            raise ValueError(f"dataset row {indices[i]}: label {labels[i]} outside [0, {self.num_classes})")
        non_finite = valid & ~np.isfinite(scores).all(axis=1)
        if non_finite.any():
            rows = indices[non_finite][:10].tolist()
            raise ValueError(
                f"non-finite scores for {int(non_finite.sum())} valid videos (dataset rows {rows})"
            )
        self._scores.append(scores.astype(np.float32, copy=False))
        self._labels.append(labels)
        self._indices.append(indices)
        self._valid.append(valid)

    def _gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self._scores:
            empty = np.zeros(0, dtype=np.int64)
            return np.zeros((0, self.num_classes), np.float32), empty, empty, np.zeros(0, dtype=bool)
        scores = np.concatenate(self._scores)
        labels = np.concatenate(self._labels)
        indices = np.concatenate(self._indices)
        valid = np.concatenate(self._valid)
        _, first = np.unique(indices, return_index=True)
        if len(first) != len(indices):
            logger.info(
                "ActionEvaluator: %d duplicate videos (same dataset row) counted once",
                len(indices) - len(first),
            )
        order = np.sort(first)
        return scores[order], labels[order], indices[order], valid[order]

    def compute(self) -> dict:
        """``dict(top1, top5, mean_class_accuracy, num_videos, num_failed)``; accuracies in percent 0-100.

        ``num_videos`` counts the valid (scored) videos, ``num_failed`` the excluded ones.
        """
        scores, labels, _, valid = self._gathered()
        num_failed = int((~valid).sum())
        if num_failed:
            logger.warning(
                "ActionEvaluator: %d videos failed to decode and are excluded from the metrics", num_failed
            )
        scores, labels = scores[valid], labels[valid]
        if self.num_classes < 5:
            logger.info("top5 with %d classes is top-%d", self.num_classes, self.num_classes)
        top1, top5 = top_k_accuracy(scores, labels, (1, 5))
        cm = self.confusion_matrix()
        return {
            "top1": 100.0 * top1,
            "top5": 100.0 * top5,
            "mean_class_accuracy": 100.0 * mean_class_accuracy(cm),
            "num_videos": int(valid.sum()),
            "num_failed": num_failed,
        }

    def confusion_matrix(self) -> np.ndarray:
        scores, labels, _, valid = self._gathered()
        pred = scores[valid].argmax(axis=1) if valid.any() else np.zeros(0, dtype=np.int64)
        return confusion_matrix(pred, labels[valid], self.num_classes)

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``predictions.npz`` (scores, labels, indices, valid), ``predictions_top5.csv``,
        ``confusion_matrix.npy`` and ``confusion_matrix.png`` into ``out_dir``; returns their paths.

        The .npz holds every video (invalid ones too, flagged) so results can be re-scored offline.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        scores, labels, indices, valid = self._gathered()
        paths = {
            "predictions": out / "predictions.npz",
            "top5_csv": out / "predictions_top5.csv",
            "confusion_npy": out / "confusion_matrix.npy",
            "confusion_png": out / "confusion_matrix.png",
        }

        def write_npz(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, scores=scores, labels=labels, indices=indices, valid=valid, average=self.average)

        _atomic_save(paths["predictions"], write_npz)

        k = min(5, self.num_classes)
        order = (
            np.argsort(-scores, axis=1, kind="stable")[:, :k] if len(scores) else np.zeros((0, k), np.int64)
        )

        def write_csv(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(
                    [
                        "index",
                        "label",
                        "valid",
                        *[f"pred{i + 1}" for i in range(k)],
                        *[f"score{i + 1}" for i in range(k)],
                    ]
                )
                for row in range(len(scores)):
                    preds = order[row].tolist()
                    writer.writerow(
                        [
                            int(indices[row]),
                            int(labels[row]),
                            int(valid[row]),
                            *preds,
                            *[f"{scores[row, p]:.6g}" for p in preds],
                        ]
                    )

        _atomic_save(paths["top5_csv"], write_csv)
        cm = self.confusion_matrix()

        def write_cm(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, cm)

        _atomic_save(paths["confusion_npy"], write_cm)
        _atomic_save(paths["confusion_png"], lambda tmp: save_confusion_matrix_png(cm, tmp, self.class_names))
        return paths
