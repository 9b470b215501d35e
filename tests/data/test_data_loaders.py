"""Loaders: every item draws from its own (seed, epoch, index) generator, the PK identity batches of ReID
training, resumed epochs, and the errors of a dataset the loaders cannot seed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from video_attn.config.schema import Config
from video_attn.data.build import EpochSeededDataset, build_eval_loader, build_train_loader, item_seed


class Tracklets(Dataset):
    """ReID-like items whose clip is one draw of the item's generator (so the clip shows which one it got)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = np.asarray(pids)

    def __len__(self) -> int:
        return len(self.pids)

    def load(self, index: int, rng: np.random.Generator) -> dict:
        return {"clip": torch.tensor([rng.random()]), "pid": int(self.pids[index]), "camid": index % 2,
                "index": index, "valid": True, "num_failed": 0, "path": f"t{index}/f000.jpg"}


def config(num_workers: int = 0, batch_size: int = 4, num_instances: int = 0) -> Config:
    cfg = Config()
    cfg.seed = 3
    cfg.data.num_workers = num_workers
    cfg.train.batch_size, cfg.train.num_instances = batch_size, num_instances
    return cfg


def epoch(loader, number: int) -> list[dict]:
    loader.batch_sampler.set_epoch(number)
    return list(loader)


def test_items_are_drawn_from_the_seed_epoch_index_generator():
    ds = Tracklets([0, 0, 1, 1, 2, 2, 3, 3])
    batches = epoch(build_train_loader(ds, config()), 2)
    for batch in batches:
        for index, value in zip(batch["index"].tolist(), batch["clip"][:, 0].tolist()):
            expected = np.random.default_rng(item_seed(3, 2, index)).random()
            assert value == pytest.approx(expected, abs=1e-7)


def test_global_rngs_are_neither_read_nor_consumed():
    ds = Tracklets(list(range(8)))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    first = epoch(build_train_loader(ds, config()), 1)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    again = epoch(build_train_loader(ds, config()), 1)
    assert all(torch.equal(a["clip"], b["clip"]) for a, b in zip(first, again))


def test_worker_count_does_not_change_the_data():
    ds = Tracklets(list(range(8)))
    in_main = epoch(build_train_loader(ds, config(num_workers=0)), 4)
    in_workers = epoch(build_train_loader(ds, config(num_workers=2)), 4)
    for a, b in zip(in_main, in_workers, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["clip"], b["clip"])


def test_resumed_epoch_gives_the_remaining_batches_unchanged():
    ds = Tracklets(list(range(12)))
    loader = build_train_loader(ds, config())
    full = epoch(loader, 5)
    loader.batch_sampler.set_epoch(5)
    loader.batch_sampler.skip_batches = 1
    resumed = list(loader)
    assert len(resumed) == len(full) - 1
    for a, b in zip(full[1:], resumed, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["clip"], b["clip"])


def test_identity_batches_hold_p_identities_times_k_tracklets_with_metadata():
    pids = [p for p in range(6) for _ in range(3)]
    loader = build_train_loader(Tracklets(pids), config(batch_size=4, num_instances=2), identity_sampler=True)
    batches = epoch(loader, 1)
    assert len(batches) == len(loader) > 0
    for batch in batches:
        ids, counts = np.unique(batch["pid"].numpy(), return_counts=True)
        assert len(ids) == 2 and (counts == 2).all()
        assert batch["pid"].tolist() == [pids[i] for i in batch["index"].tolist()]
        assert batch["camid"].tolist() == [i % 2 for i in batch["index"].tolist()]
        assert batch["path"] == [f"t{i}/f000.jpg" for i in batch["index"].tolist()]
    assert [b["index"].tolist() for b in epoch(loader, 1)] == [b["index"].tolist() for b in batches]


def test_eval_loader_keeps_order_and_every_item():
    ds = Tracklets([5, 6, 7, 8, 9])
    batches = list(build_eval_loader(ds, config(), batch_size=2))
    assert [b["index"].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert sum((b["path"] for b in batches), []) == [f"t{i}/f000.jpg" for i in range(5)]


def test_dataset_without_load_is_a_clear_error():
    class IndexOnly(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> dict:
            return {"clip": torch.zeros(1), "index": index}

    with pytest.raises(TypeError, match=r"IndexOnly has no load\(index, rng\) method"):
        EpochSeededDataset(IndexOnly(), seed=0)
    with pytest.raises(ValueError, match="identity sampler needs a dataset with a `pids` attribute"):
        build_train_loader(IndexOnly(), config(batch_size=2, num_instances=2), identity_sampler=True)
