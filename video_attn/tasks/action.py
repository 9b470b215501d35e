"""Action recognition: TSN / TSM / TANet on video_list, frame_list, kinetics or sthv2 data.

Training minimises cross-entropy (``train.loss.label_smoothing``). Evaluation scores every video over its
views (clips x crops, item clip ``(V, T, 3, H, W)``), averaged per ``eval.average`` (``logits``: the official
TAM test; ``softmax``: mmaction2), and reports top-1, top-5 and mean class accuracy in percent over the
videos that loaded (``num_videos``; the others are counted in ``num_failed``); given an output prefix, it also
writes the per-video predictions and the confusion matrix with the class names
(:meth:`~video_attn.evaluation.action.ActionEvaluator.save`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from video_attn.data.build import build_train_loader, unwrap_dataset
from video_attn.data.datasets.action_build import (
    ACTION_FORMATS,
    ACTION_SPLITS,
    action_class_names,
    action_num_classes,
    build_action_dataset,
)
from video_attn.engine import distributed as du
from video_attn.engine.evaluator import autocast, inference_on_loader, to_numpy
from video_attn.evaluation.action import ActionEvaluator, average_views
from video_attn.models import ACTION_ARCHS

from .base import LossFn, Task

logger = logging.getLogger(__name__)


class ActionTask(Task):
    name: ClassVar[str] = "action"
    formats: ClassVar[tuple[str, ...]] = ACTION_FORMATS
    archs: ClassVar[tuple[str, ...]] = ACTION_ARCHS
    splits: ClassVar[tuple[str, ...]] = ACTION_SPLITS
    primary_metric: ClassVar[str] = "top1"

    def build_dataset(self, split: str) -> Dataset:
        # The training set keeps every label: a wrong model.num_classes is an error in check_train_data,
        # not a silently smaller dataset. Evaluation sets drop (and report) labels the model cannot predict.
        num_classes = None if split == "train" else self.cfg.model.num_classes
        return build_action_dataset(self.cfg, split, num_classes=num_classes)

    def check_train_data(self, dataset: Dataset) -> None:
        num_classes = self.cfg.model.num_classes
        labels = np.asarray(dataset.labels, dtype=np.int64)
        outside = (labels < 0) | (labels >= num_classes)
        if outside.any():
            raise ValueError(
                f"model.num_classes={num_classes} but the training labels span [{labels.min()}, "
                f"{labels.max()}] ({int(outside.sum())} samples outside [0, {num_classes})); fix "
                "model.num_classes, data.labels_file or the annotation file"
            )

    def num_classes_of(self, dataset: Dataset) -> int:
        """The length of the class names file (``data.labels_file`` or the format's official one) when there
        is one, else the largest training label + 1."""
        return action_num_classes(self.cfg, dataset.labels)

    def class_names(self, train_set: Dataset) -> list[str]:
        return action_class_names(self.cfg, self.cfg.model.num_classes)

    def build_train_loader(
        self, dataset: Dataset, rank: int = 0, world_size: int = 1, pin_memory: bool = False
    ) -> DataLoader:
        return build_train_loader(dataset, self.cfg, rank, world_size, pin_memory)

    def eval_splits(self, split: str | None = None) -> tuple[str, ...]:
        """``(split,)``; by default the test split when ``data.test.ann_file`` is set, else val."""
        if split is None:
            split = "test" if self.cfg.data.test.ann_file else "val"
        if split not in ("val", "test"):
            raise ValueError(f"action evaluation split {split!r}; valid: val, test")
        return (split,)

    def validation_splits(self) -> tuple[str, ...]:
        return ("val",) if self.cfg.data.val.ann_file else ()

    def build_loss(self, model: nn.Module, device: torch.device) -> tuple[LossFn, nn.Module | None]:
        smoothing = self.cfg.train.loss.label_smoothing

        def action_loss(logits: torch.Tensor, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
            return F.cross_entropy(logits.float(), batch["label"], label_smoothing=smoothing), {}

        return action_loss, None

    def video_scores(
        self, model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None
    ) -> dict[str, np.ndarray]:
        """Per-video class scores ``scores`` (N, K), views averaged per ``eval.average``, with ``label``,
        ``index``, ``valid`` and ``path`` of every dataset item (sorted by index)."""
        average = self.cfg.eval.average
        model.eval()

        def step(batch: dict[str, Any]) -> dict[str, np.ndarray]:
            clip = batch["clip"]  # (N, T, 3, H, W) or (N, V, T, 3, H, W)
            n = clip.shape[0]
            with autocast(device, amp_dtype):
                logits = model(clip.flatten(0, 1) if clip.dim() == 6 else clip)
            scores = average_views(logits.float().reshape(n, -1, logits.shape[-1]), average)
            return {
                "scores": to_numpy(scores, np.float32),
                "label": to_numpy(batch["label"], np.int64),
                "index": to_numpy(batch["index"], np.int64),
                "valid": to_numpy(batch["valid"], bool),
                "path": np.asarray(batch["path"], dtype=np.str_),
            }

        return inference_on_loader(step, loader, device, "eval")

    def evaluate(
        self,
        model: nn.Module,
        loaders: dict[str, DataLoader],
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        output_prefix: Path | None = None,
        class_names: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """``top1``, ``top5``, ``mean_class_accuracy`` (percent), ``num_videos``, ``num_failed``.

        With ``output_prefix``, rank 0 also writes the per-video predictions and the confusion matrix there
        (see :meth:`ActionEvaluator.save`), named by ``data.labels_file`` when the config sets one, else by
        ``class_names`` (those stored with the model), else as :func:`action_class_names` finds them.
        """
        if len(loaders) != 1:
            raise ValueError(f"action evaluation reads one split, got {sorted(loaders)}")
        (loader,) = loaders.values()
        # names first: a labels file that does not fit the model fails before the inference, not after it
        names = self._output_class_names(class_names) if output_prefix is not None else None
        res = self.video_scores(model, loader, device, amp_dtype)
        evaluator = ActionEvaluator(res["scores"].shape[1], average=self.cfg.eval.average, class_names=names)
        evaluator.update(res["scores"], res["label"], res["index"], res["valid"], paths=res["path"])
        metrics = evaluator.compute()
        if output_prefix is not None and du.is_main_process():
            for path in evaluator.save(output_prefix).values():
                logger.info("wrote %s", path)
        return metrics

    def _output_class_names(self, stored: Sequence[str] | None) -> list[str]:
        # An explicit labels file wins (it may rename the classes of an older checkpoint); otherwise the
        # names the model was trained with, which need no dataset file on this machine.
        num_classes = self.cfg.model.num_classes
        if stored is not None and not self.cfg.data.labels_file:
            if len(stored) != num_classes:
                raise ValueError(
                    f"{len(stored)} class names stored with the model but model.num_classes={num_classes}"
                )
            return [str(name) for name in stored]
        return action_class_names(self.cfg, num_classes)

    def eval_settings(self, splits: tuple[str, ...]) -> dict[str, Any]:
        return {"split": splits[0], "average": self.cfg.eval.average}

    def extract_features(
        self, model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None
    ) -> dict[str, np.ndarray]:
        """``features`` (N, C): the classifier's input averaged over segments and views; ``labels``,
        ``paths``, ``num_frames`` (-1 for video files: unknown without decoding), ``valid``, ``index``."""
        classifier = getattr(model, "classifier", None)
        if not isinstance(classifier, nn.Module):
            raise AttributeError("feature extraction needs model.classifier (its input is the feature)")
        model.eval()
        captured: list[torch.Tensor] = []

        def step(batch: dict[str, Any]) -> dict[str, np.ndarray]:
            clip = batch["clip"]
            with autocast(device, amp_dtype):
                model(clip.flatten(0, 1) if clip.dim() == 6 else clip)
            feat = torch.cat(captured).float()
            captured.clear()
            return {
                "features": to_numpy(feat.reshape(clip.shape[0], -1, feat.shape[-1]).mean(dim=1), np.float32),
                "labels": to_numpy(batch["label"], np.int64),
                "paths": np.asarray(batch["path"], dtype=np.str_),
                "valid": to_numpy(batch["valid"], bool),
                "index": to_numpy(batch["index"], np.int64),
            }

        handle = classifier.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
        try:
            arrays = inference_on_loader(step, loader, device, "features")
        finally:
            handle.remove()
        # frame counts are known without decoding only for frame folders (the list files give them)
        records = unwrap_dataset(loader).records
        counts = [records[i].num_frames for i in arrays["index"]]
        arrays["num_frames"] = np.asarray([-1 if c is None else c for c in counts], dtype=np.int64)
        return arrays
