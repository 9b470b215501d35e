"""Dataset and DataLoader construction shared by training, evaluation and feature extraction.

Reproducibility contract (what makes a killed run resume to the same weights):
- the sample order of an epoch is a pure function of ``(seed, epoch)`` (``DistributedSampler`` seeded with
  ``seed``, also in single-process runs; the identity sampler is seeded the same way);
- every item's randomness (frame sampling, augmentation, replacement of a broken video) is a function of
  ``(seed, epoch, index)``: the batch sampler yields ``(epoch, index)`` keys and :class:`EpochSeededDataset`
  hands the dataset's ``load(index, rng)`` a ``numpy.random.Generator`` seeded from them, in the main process
  and in workers alike (persistent workers included), so the worker count and worker assignment do not
  change the data; no item code reads Python's, NumPy's or torch's global RNG, so data loading neither
  depends on nor perturbs the training RNG (dropout);
- a resumed epoch skips its already-seen batches (:class:`ResumableBatchSampler`), which only costs index
  arithmetic.
Distributed evaluation uses ``DistributedSampler(shuffle=False)``, which pads the last round with
duplicates; the evaluator gathers results with their dataset index and drops the duplicates.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from video_attn.config.schema import Config
from video_attn.data.batch_samplers import ResumableBatchSampler, build_identity_sampler

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ seeded items
def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that depends only on (seed, epoch, index)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0])


class EpochSeededDataset(Dataset):
    """Wraps a dataset: ``ds[(epoch, index)]`` is ``dataset.load(index, rng)`` with
    ``rng = np.random.default_rng(item_seed(seed, epoch, index))``.

    The wrapped dataset draws every random choice of the item from ``rng`` (see the module docstring).
    Plain integer keys load with epoch 0.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        if not callable(getattr(dataset, "load", None)):
            raise TypeError(f"{type(dataset).__name__} has no load(index, rng) method; the loaders hand "
                            "every item its own random generator through it")
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        return self.dataset.load(index, np.random.default_rng(item_seed(self.seed, epoch, index)))


def worker_init_fn(worker_id: int) -> None:
    """Keep a worker single-threaded (workers share the CPU) and deaf to SIGINT.

    Ctrl-C reaches the whole process group; the main process handles it by writing a checkpoint, which
    needs the workers alive until it shuts them down.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ loaders
def build_train_loader(
    dataset: Dataset,
    cfg: Config,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
    identity_sampler: bool = False,
) -> DataLoader:
    """The training DataLoader: epoch-seeded order, per-item seeded augmentation, drop_last, resumable.

    ``identity_sampler`` (the ReID task sets it when ``train.num_instances > 0``) uses the PK identity sampler
    with ``train.num_instances`` tracklets per identity; otherwise a ``DistributedSampler`` (shuffle, seeded
    with ``cfg.seed``) in single-process runs too, so the order is a function of the epoch.
    Raises ``ValueError`` for an empty dataset or a per-process batch larger than the per-process share.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("the training dataset is empty (check data.root and data.train.ann_file)")
    batch_size = cfg.train.batch_size
    if identity_sampler:
        sampler: Sampler[int] = build_identity_sampler(
            dataset, batch_size, cfg.train.num_instances, seed=cfg.seed, rank=rank, world_size=world_size
        )
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
