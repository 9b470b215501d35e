"""Batch samplers: which dataset items make up each training / evaluation batch.

- :class:`ResumableBatchSampler` cuts an index order (``DistributedSampler`` or the identity sampler) into
  batches of ``(epoch, index)`` keys, for :class:`video_attn.data.build.EpochSeededDataset`; a resumed epoch
  skips the batches it has already seen.
- :class:`RandomIdentitySampler`: the PK identity order for ReID training (Hermans et al. 2017, "In Defense of
  the Triplet Loss"; torchreid's ``RandomIdentitySampler``).

PK order: each batch holds P identities x K tracklets (``K = train.num_instances``, ``P = batch_size // K``).
Per epoch, every identity's tracklets are shuffled and cut into groups of K (an identity with fewer than K
tracklets is sampled with replacement up to K, as torchreid; a trailing partial group is dropped); then
batches are formed by repeatedly drawing P distinct identities that still have groups and taking one group
from each, until fewer than P identities are left.

Distributed: every rank builds the same PK epoch list from ``(seed, epoch)`` and takes batches
``rank, rank + W, rank + 2W, ...`` of it, truncated to a common number of batches, so ranks see disjoint
data and have the same length. The identity sampler yields dataset indices in batch order; the resumable
batch sampler cuts them with the same per-process ``batch_size`` and ``drop_last``. ``len()`` is exact (the
epoch list is built to answer it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["RandomIdentitySampler", "ResumableBatchSampler", "build_identity_sampler"]


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys from an index sampler; the first ``skip_batches`` can be skipped.

    ``set_epoch`` is forwarded to the wrapped sampler (DistributedSampler / identity sampler).
    ``skip_batches`` applies to the next pass only (a resumed epoch), then resets to 0.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, drop_last: bool) -> None:
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

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
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


class RandomIdentitySampler(Sampler[int]):
    """Dataset indices in PK batch order (see the module docstring), a pure function of ``(seed, epoch)``."""

    def __init__(
        self,
        pids: Sequence[int] | np.ndarray,
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(
                f"train.batch_size={batch_size} must be a positive multiple of "
                f"train.num_instances={num_instances}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.pids = np.asarray(pids, dtype=np.int64)
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.num_pids_per_batch = batch_size // num_instances
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        groups: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(self.pids.tolist()):
            groups[pid].append(i)
        self.index_of_pid = {pid: np.asarray(idx, dtype=np.int64) for pid, idx in sorted(groups.items())}
        if len(self.index_of_pid) < self.num_pids_per_batch:
            raise ValueError(
                f"PK sampler needs P={self.num_pids_per_batch} identities per batch but the training set has "
                f"{len(self.index_of_pid)} (lower train.batch_size or raise train.num_instances)"
            )
        self._cache: tuple[int, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _epoch_batches(self) -> np.ndarray:
        """All batches of the epoch (same on every rank): (num_batches, batch_size) indices."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, 0x1D])
        k = self.num_instances
        remaining: dict[int, list[np.ndarray]] = {}
        for pid, idx in self.index_of_pid.items():
            chosen = rng.choice(idx, size=k, replace=True) if len(idx) < k else rng.permutation(idx)
            n_groups = len(chosen) // k
            remaining[pid] = [chosen[g * k : (g + 1) * k] for g in range(n_groups)]
        batches = []
        available = sorted(remaining)
        while len(available) >= self.num_pids_per_batch:
            picked = rng.choice(len(available), size=self.num_pids_per_batch, replace=False)
            batch = []
            for j in sorted(picked.tolist()):
                batch.append(remaining[available[j]].pop())
            batches.append(np.concatenate(batch))
            available = [p for p in available if remaining[p]]
        out = np.stack(batches) if batches else np.zeros((0, self.batch_size), dtype=np.int64)
        self._cache = (self.epoch, out)
        return out

    def _rank_batches(self) -> np.ndarray:
        batches = self._epoch_batches()
        per_rank = len(batches) // self.world_size
        return batches[self.rank : per_rank * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_batches().reshape(-1).tolist())

    def __len__(self) -> int:
        return int(self._rank_batches().size)


def build_identity_sampler(
    dataset: object, batch_size: int, num_instances: int, seed: int = 0, rank: int = 0, world_size: int = 1
) -> RandomIdentitySampler:
    """A PK sampler over ``dataset.pids`` (the training labels of a ReID dataset)."""
    pids = getattr(dataset, "pids", None)
    if pids is None:
        raise ValueError("the identity sampler needs a dataset with a `pids` attribute (a ReID training set)")
    return RandomIdentitySampler(pids, batch_size, num_instances, seed=seed, rank=rank, world_size=world_size)
