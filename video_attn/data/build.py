"""Dataset and DataLoader construction shared by training, evaluation and feature extraction.

Reproducibility contract (what makes a killed run resume to the same weights):
- the sample order of an epoch is a pure function of ``(seed, epoch)`` (``DistributedSampler`` seeded with
  ``seed``, also in single-process runs; the identity sampler is seeded the same way);
- every item's augmentation randomness is a function of ``(seed, epoch, index)``: the batch sampler yields
  ``(epoch, index)`` keys and :class:`EpochSeededDataset` seeds the item's RNGs from them before loading, in
  the main process and in workers alike (persistent workers included), so the worker count and worker
  assignment do not change the data;
- a resumed epoch skips its already-seen batches (:class:`ResumableBatchSampler`), which only costs index
  arithmetic.
Distributed evaluation uses ``DistributedSampler(shuffle=False)``, which pads the last round with
duplicates; the evaluator gathers results with their dataset index and drops the duplicates.
"""

from __future__ import annotations

import logging
import random
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from video_attn.config.schema import Config

logger = logging.getLogger(__name__)

ACTION_FORMATS = ("video_list", "frame_list", "kinetics", "sthv2")
REID_FORMATS = ("mars", "dukev", "ilidsvid", "prid")
ACTION_SPLITS = ("train", "val", "test")
REID_SPLITS = ("train", "query", "gallery")


def task_of(cfg: Config) -> str:
    """``action`` or ``reid``, from the data format (the source of truth for which builders apply)."""
    if cfg.data.format in ACTION_FORMATS:
        return "action"
    if cfg.data.format in REID_FORMATS:
        return "reid"
    raise ValueError(f"data.format={cfg.data.format!r}; valid: {', '.join(ACTION_FORMATS + REID_FORMATS)}")


def build_dataset(cfg: Config, split: str) -> Dataset:
    """The ``split`` dataset for ``cfg.data.format`` (action: train/val/test; ReID: train/query/gallery)."""
    task = task_of(cfg)
    if task == "action":
        if split not in ACTION_SPLITS:
            raise ValueError(f"split {split!r} is not an action split; valid: {', '.join(ACTION_SPLITS)}")
        from video_attn.data.datasets.action_build import build_action_dataset

        return build_action_dataset(cfg, split)
    if split not in REID_SPLITS:
        raise ValueError(f"split {split!r} is not a ReID split; valid: {', '.join(REID_SPLITS)}")
    from video_attn.data.datasets.reid_build import build_reid_dataset

    return build_reid_dataset(cfg, split)


# ------------------------------------------------------------------------------------ seeded items
def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on (seed, epoch, index)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0])


class EpochSeededDataset(Dataset):
    """Wraps a dataset: ``ds[(epoch, index)]`` loads item ``index``, RNGs seeded from (seed, epoch, index).

    The Python, NumPy and torch global RNGs are seeded per item; in the main process (``num_workers=0``) their
    previous states are restored afterwards so data loading does not perturb the training RNG (dropout).
    Datasets with their own per-item generator get ``set_epoch(epoch)`` / ``seed`` set before the call.
    Plain integer keys load with epoch 0.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        s = item_seed(self.seed, epoch, index)
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker:
            return self._load_seeded(index, s)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                return self._load_seeded(index, s)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def _load_seeded(self, index: int, s: int) -> Any:
        random.seed(s)
        np.random.seed(s)
        torch.default_generator.manual_seed(s)
        return self.dataset[index]


class ResumableBatchSampler(Sampler[list]):
    """Batches of ``(epoch, index)`` keys from an index sampler; the first ``skip_batches`` can be skipped.

    ``set_epoch`` is forwarded to the wrapped sampler (DistributedSampler / identity sampler).
    ``skip_batches`` applies to the next pass only (a resumed epoch), then resets to 0.
    """

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list]:
        skip, self.skip_batches = self.skip_batches, 0
        epoch = self.epoch
        batch: list[tuple[int, int]] = []
        produced = 0
        for index in self.sampler:
            batch.append((epoch, int(index)))
            if len(batch) == self.batch_size:
                if produced >= skip:
                    yield batch
                produced += 1
                batch = []
        if batch and not self.drop_last and produced >= skip:
            yield batch


def worker_init_fn(worker_id: int) -> None:
    """Seed a worker's global RNGs from its torch seed, keep it single-threaded (workers share the CPU).

    Workers ignore SIGINT: Ctrl-C reaches the whole process group, and the main process handles it by
    writing a checkpoint, which needs the workers alive until it shuts them down.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ loaders
def _identity_sampler(dataset: Dataset, cfg: Config, rank: int, world_size: int) -> Sampler:
    from video_attn.data.identity_sampler import build_identity_sampler

    return build_identity_sampler(
        dataset,
        batch_size=cfg.train.batch_size,
        num_instances=cfg.train.num_instances,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
    )


def build_train_loader(
    dataset: Dataset, cfg: Config, rank: int = 0, world_size: int = 1, pin_memory: bool = False
) -> DataLoader:
    """The training DataLoader: epoch-seeded order, per-item seeded augmentation, drop_last, resumable.

    ReID with ``train.num_instances > 0`` uses the PK identity sampler; otherwise a ``DistributedSampler``
    (shuffle, seeded with ``cfg.seed``) in single-process runs too, so the order is a function of the epoch.
    Raises ``ValueError`` for an empty dataset or a per-process batch larger than the per-process share.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("the training dataset is empty (check data.root and data.train.ann_file)")
    batch_size = cfg.train.batch_size
    if task_of(cfg) == "reid" and cfg.train.num_instances > 0:
        sampler: Sampler = _identity_sampler(dataset, cfg, rank, world_size)
    else:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False
        )
    per_rank = len(sampler)  # type: ignore[arg-type]
    if per_rank < batch_size:
        raise ValueError(
            f"train.batch_size={batch_size} is larger than the {per_rank} training samples per process "
            f"({n} samples, {world_size} process(es)); with drop_last no batch would be formed"
        )
    batch_sampler = ResumableBatchSampler(sampler, batch_size, drop_last=True)
    return _make_loader(
        EpochSeededDataset(dataset, cfg.seed), batch_sampler, cfg, pin_memory, persistent=True
    )


def build_eval_loader(
    dataset: Dataset,
    cfg: Config,
    batch_size: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """An in-order DataLoader over this rank's share of ``dataset`` (padded with duplicates when sharded).

    ``batch_size`` defaults to ``cfg.eval.batch_size``; no items are dropped.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("the evaluation dataset is empty (check data.root and the split's ann_file)")
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False, drop_last=False)
    batch_sampler = ResumableBatchSampler(sampler, batch_size or cfg.eval.batch_size, drop_last=False)
    return _make_loader(
        EpochSeededDataset(dataset, cfg.seed), batch_sampler, cfg, pin_memory, persistent=False
    )


def build_dataloader(
    dataset: Dataset, cfg: Config, train: bool, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
    batch_size: int | None = None,
) -> DataLoader:
    """:func:`build_train_loader` when ``train`` else :func:`build_eval_loader` (``batch_size`` for eval)."""
    if train:
        return build_train_loader(dataset, cfg, rank, world_size, pin_memory)
    return build_eval_loader(dataset, cfg, batch_size, rank, world_size, pin_memory)


def _make_loader(
    dataset: Dataset, batch_sampler: ResumableBatchSampler, cfg: Config, pin_memory: bool, persistent: bool
) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        # A private generator: creating an iterator (which draws the workers' base seed) must not consume
        # the global torch RNG, or a resumed run's dropout draws would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def unwrap_dataset(loader_or_dataset: DataLoader | Dataset) -> Dataset:
    """The user dataset behind a loader built here (for metadata such as ``pids`` / ``paths``)."""
    ds = loader_or_dataset.dataset if isinstance(loader_or_dataset, DataLoader) else loader_or_dataset
    while isinstance(ds, EpochSeededDataset):
        ds = ds.dataset
    return ds
