"""What every task (action recognition, video ReID) provides to the entry points in ``video_attn.apis``."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from video_attn.config.schema import Config
from video_attn.data.build import build_eval_loader
from video_attn.engine.train_loop import LossFn

logger = logging.getLogger(__name__)


class Task(ABC):
    """One task: its datasets and splits, training-data checks, loss, evaluation and feature extraction.

    A subclass names its task (``name``), the ``data.format`` / ``model.arch`` names it accepts, its splits
    and the metric that selects ``best.pt`` (``primary_metric``, higher is better). It is built once per run
    from a config checked by :func:`video_attn.tasks.build_task`.
    """

    name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]
    archs: ClassVar[tuple[str, ...]]
    splits: ClassVar[tuple[str, ...]]
    primary_metric: ClassVar[str]

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    # ------------------------------------------------------------------------------------------ data
    @abstractmethod
    def build_dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (one of :attr:`splits`)."""

    @abstractmethod
    def check_train_data(self, dataset: Dataset) -> None:
        """Raise ``ValueError`` naming ``model.num_classes`` when the training data does not fit the model."""

    @abstractmethod
    def num_classes_of(self, dataset: Dataset) -> int:
        """The ``model.num_classes`` the training set implies (used when the config leaves it unset)."""

    @abstractmethod
    def class_names(self, train_set: Dataset) -> list[str]:
        """Names of the model's classes ``0 .. model.num_classes - 1``, stored in every checkpoint."""

    def build_train_dataset(self) -> Dataset:
        """The training set, checked by :meth:`check_train_data` before any training starts.

        An unset ``model.num_classes`` is set here (in ``self.cfg``) to :meth:`num_classes_of` the set, so
        the model, the loss and the config stored in checkpoints all get the resolved value.
        """
        dataset = self.build_dataset("train")
        if len(dataset) == 0:  # type: ignore[arg-type]
            data = self.cfg.data
            raise ValueError(f"the training dataset is empty (data.root={data.root!r}, format {data.format})")
        if self.cfg.model.num_classes is None:
            self.cfg.model.num_classes = self.num_classes_of(dataset)
            logger.info("model.num_classes=%d, taken from the training set", self.cfg.model.num_classes)
        self.check_train_data(dataset)
        return dataset

    @abstractmethod
    def build_train_loader(
        self, dataset: Dataset, rank: int = 0, world_size: int = 1, pin_memory: bool = False
    ) -> DataLoader:
        """The training loader: shuffled per epoch, per-item seeded augmentation, resumable."""

    def eval_batch_size(self) -> int:
        """Items per evaluation batch."""
        return self.cfg.eval.batch_size

    @abstractmethod
    def eval_splits(self, split: str | None = None) -> tuple[str, ...]:
        """The splits an evaluation reads (``split``: the user's choice, where the task offers one)."""

    @abstractmethod
    def validation_splits(self) -> tuple[str, ...]:
        """The splits validated on during training; empty when the config sets none."""

    def build_eval_loader(
        self, split: str, rank: int = 0, world_size: int = 1, pin_memory: bool = False
    ) -> DataLoader:
        """An in-order loader over this rank's share of ``split`` (evaluation and feature extraction)."""
        return build_eval_loader(
            self.build_dataset(split), self.cfg, self.eval_batch_size(), rank, world_size, pin_memory
        )

    def build_eval_loaders(
        self, splits: tuple[str, ...], rank: int = 0, world_size: int = 1, pin_memory: bool = False
    ) -> dict[str, DataLoader]:
        """:meth:`build_eval_loader` of each of ``splits`` (see :meth:`eval_splits`)."""
        return {s: self.build_eval_loader(s, rank, world_size, pin_memory) for s in splits}

    # ------------------------------------------------------------------------------------------ model
    @abstractmethod
    def build_loss(self, model: nn.Module, device: torch.device) -> tuple[LossFn, nn.Module | None]:
        """The training loss, and its module when it has parameters (they join the optimizer)."""

    @abstractmethod
    def evaluate(
        self,
        model: nn.Module,
        loaders: dict[str, DataLoader],
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        output_prefix: Path | None = None,
        class_names: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """The task's metrics (percent) of ``model`` on ``loaders``; the same on every rank.

        ``output_prefix``: where rank 0 writes the task's per-item outputs, as ``<prefix>_<name>`` files
        (action: predictions and confusion matrix; tasks without such outputs ignore it). ``class_names``:
        the names stored with the model (its checkpoint's ``class_names``), for those outputs.
        """

    @abstractmethod
    def eval_settings(self, splits: tuple[str, ...]) -> dict[str, Any]:
        """The settings a standalone evaluation reports next to its metrics (split, averaging, test mode)."""

    @abstractmethod
    def extract_features(
        self, model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None
    ) -> dict[str, np.ndarray]:
        """The arrays of a feature file (see ``tools/extract_features.py``) for every item of ``loader``."""
