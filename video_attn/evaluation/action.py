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
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from torch import Tensor

from video_attn.engine.checkpoint import atomic_write

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
    cm: np.ndarray, path: str | os.PathLike | BinaryIO, class_names: Sequence[str] | None = None
) -> None:
    """Row-normalised confusion matrix image (matplotlib Agg backend, no display needed) to a path or a
    binary file; class names label the axes up to 50 classes, counts fill the cells up to 20."""
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
    fig.savefig(path if hasattr(path, "write") else os.fspath(path), dpi=120, format="png")


class ActionEvaluator:
    """Accumulates per-video scores and computes the action metrics.

    Args:
        num_classes: K.
        average: how :meth:`update` reduces multi-view scores (N, V, K): ``"logits"`` or ``"softmax"``.
        class_names: optional names of the K classes for :meth:`save` (default: the indices).

    :meth:`update` takes one batch: ``scores`` (N, K) per video or (N, V, K) per view, ``labels`` (N,),
    ``indices`` (N,) dataset rows, ``valid`` (N,) bools and optionally ``paths`` (N,) of the videos (for
    :meth:`save`). A video seen twice (e.g. DistributedSampler padding after a gather) is counted once.
    Scores of invalid videos are ignored; non-finite scores of a valid video are an error naming the dataset
    row (a diverged model must not give a silently wrong metric).
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
        self._paths: list[np.ndarray] = []

    @staticmethod
    def _to_numpy(value, dtype=None) -> np.ndarray:
        if isinstance(value, Tensor):
            value = value.detach().float().cpu().numpy() if value.is_floating_point() else value.cpu().numpy()
        return np.asarray(value, dtype=dtype)

    def update(self, scores, labels, indices, valid=None, paths: Sequence[str] | None = None) -> None:
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
        paths = np.asarray([""] * n if paths is None else paths, dtype=np.str_).reshape(-1)
        if not (len(labels) == len(indices) == len(valid) == len(paths) == n):
            raise ValueError(
                f"batch sizes differ: scores {n}, labels {len(labels)}, "
                f"indices {len(indices)}, valid {len(valid)}, paths {len(paths)}"
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
        self._paths.append(paths)

    def _gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Scores, labels, indices, valid and paths of each video once, in order of first appearance."""
        if not self._scores:
            empty = np.zeros(0, dtype=np.int64)
            return (np.zeros((0, self.num_classes), np.float32), empty, empty, np.zeros(0, dtype=bool),
                    np.zeros(0, dtype=np.str_))
        scores = np.concatenate(self._scores)
        labels = np.concatenate(self._labels)
        indices = np.concatenate(self._indices)
        valid = np.concatenate(self._valid)
        paths = np.concatenate(self._paths)
        _, first = np.unique(indices, return_index=True)
        if len(first) != len(indices):
            logger.info(
                "ActionEvaluator: %d duplicate videos (same dataset row) counted once",
                len(indices) - len(first),
            )
        order = np.sort(first)
        return scores[order], labels[order], indices[order], valid[order], paths[order]

    def compute(self) -> dict:
        """``dict(top1, top5, mean_class_accuracy, num_videos, num_failed)``; accuracies in percent 0-100.

        ``num_videos`` counts the valid (scored) videos, ``num_failed`` the excluded ones.
        """
        scores, labels, _, valid, _ = self._gathered()
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
        """(K, K) counts over the valid videos, rows = true class, columns = top-1 prediction."""
        scores, labels, _, valid, _ = self._gathered()
        pred = scores[valid].argmax(axis=1) if valid.any() else np.zeros(0, dtype=np.int64)
        return confusion_matrix(pred, labels[valid], self.num_classes)

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Class probabilities of per-video ``scores`` (N, K): softmax of averaged logits, or the averaged
        softmax probabilities themselves (``average="softmax"``)."""
        if self.average == "softmax":
            return scores
        return torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)).softmax(dim=1).numpy()

    def save(self, prefix: str | os.PathLike, topk: int = 5) -> dict[str, Path]:
        """Write the per-video predictions and the confusion matrix as ``<prefix>_<name>`` files (atomically).

        - ``predictions.csv``: one row per video (``index``, ``path``, ``valid``, ``label``, ``label_name``,
          ``pred``, ``pred_name``, then ``top{i}``, ``top{i}_name``, ``top{i}_prob`` for i = 1..topk); videos
          that failed to load keep their row with ``valid`` 0 and empty predictions.
        - ``predictions.npz``: ``scores`` (N, K) as averaged, ``labels``, ``indices``, ``valid``, ``paths``,
          ``class_names``, ``average``: enough to re-score offline (loads with ``allow_pickle=False``).
        - ``confusion.npy`` (K, K) int64 counts, rows = true class; ``confusion.png``, row-normalised.

        ``prefix`` ``out/best`` writes ``out/best_predictions.csv`` etc. Returns the paths by name.
        """
        prefix = Path(prefix)
        paths = {
            name: prefix.with_name(f"{prefix.name}_{name}")
            for name in ("predictions.csv", "predictions.npz", "confusion.npy", "confusion.png")
        }
        scores, labels, indices, valid, video_paths = self._gathered()
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        k = min(topk, self.num_classes)
        probs = self.probabilities(scores)
        # stable descending sort: ties go to the lower class index, as in the metrics
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]

        header = ["index", "path", "valid", "label", "label_name", "pred", "pred_name"]
        for i in range(1, k + 1):
            header += [f"top{i}", f"top{i}_name", f"top{i}_prob"]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        for row in range(len(scores)):
            label = int(labels[row])
            label_name = names[label] if 0 <= label < self.num_classes else ""
            cells: list = [int(indices[row]), video_paths[row], int(valid[row]), label, label_name]
            if valid[row]:
                top = order[row].tolist()
                cells += [top[0], names[top[0]]]
                for c in top:
                    cells += [c, names[c], f"{probs[row, c]:.6f}"]
            else:
                cells += [""] * (2 + 3 * k)
            writer.writerow(cells)
        csv_bytes = text.getvalue().encode("utf-8")
        atomic_write(paths["predictions.csv"], lambda f: f.write(csv_bytes))

        arrays = {
            "scores": scores,
            "labels": labels,
            "indices": indices,
            "valid": valid,
            "paths": video_paths,
            "class_names": np.asarray(names, dtype=np.str_),
            "average": np.asarray(self.average),
        }
        atomic_write(paths["predictions.npz"], lambda f: np.savez(f, **arrays))
        cm = self.confusion_matrix()
        atomic_write(paths["confusion.npy"], lambda f: np.save(f, cm))
        atomic_write(paths["confusion.png"], lambda f: save_confusion_matrix_png(cm, f, names))
        return paths
