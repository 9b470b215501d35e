"""Unit tests of the engine pieces: parameter groups, schedules, checkpoints, samplers, seeded items."""

from __future__ import annotations

import math
import os
import pickle
import random

import numpy as np
import pytest
import torch
from engine_testkit import MeanModel, StandInClips, tiny_config
from torch import nn
from torch.utils.data import DataLoader

from video_attn.config import ConfigError
from video_attn.data.batch_samplers import ResumableBatchSampler
from video_attn.data.build import (
    EpochSeededDataset,
    build_eval_loader,
    build_train_loader,
    item_seed,
)
from video_attn.engine.checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    model_state_from_checkpoint,
    restore_rng_state,
)
from video_attn.engine.hooks import annealed_temperature
from video_attn.engine.lr_scheduler import WarmupLRScheduler, build_scheduler
from video_attn.engine.optim import build_optimizer, build_param_groups, scaled_lr


# ------------------------------------------------------------------------------------- param groups
def test_param_groups_lr_mults_and_no_decay(tmp_path):
    cfg = tiny_config(
        tmp_path,
        train={
            "lr": 0.1,
            "weight_decay": 1e-4,
            "fc_lr_mult": 5.0,
            "fc_bias_lr_mult": 10.0,
            "no_decay_norm_bias": True,
        },
    )
    model = MeanModel()
    groups = {g["name"]: g for g in build_param_groups(model, cfg.train, lr=0.1)}
    assert set(groups) == {"base", "base_no_decay", "fc_weight", "fc_bias_no_decay"}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids["fc_weight"] == {id(model.classifier.weight)}
    assert ids["fc_bias_no_decay"] == {id(model.classifier.bias)}
    assert ids["base"] == {id(model.proj.weight)}
    assert ids["base_no_decay"] == {id(model.proj.bias), id(model.bn.weight), id(model.bn.bias)}
    assert groups["fc_weight"]["lr"] == pytest.approx(0.5) and groups["fc_weight"]["weight_decay"] == 1e-4
    assert groups["fc_bias_no_decay"]["lr"] == pytest.approx(1.0)
    assert groups["fc_bias_no_decay"]["weight_decay"] == 0.0
    assert groups["base"]["lr"] == 0.1 and groups["base"]["weight_decay"] == 1e-4
    assert groups["base_no_decay"]["weight_decay"] == 0.0
    # every trainable parameter exactly once
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))


def test_param_groups_decay_everywhere_and_frozen_params(tmp_path):
    cfg = tiny_config(tmp_path, train={"no_decay_norm_bias": False, "weight_decay": 5e-4})
    model = MeanModel()
    model.proj.weight.requires_grad_(False)
    groups = build_param_groups(model, cfg.train, lr=0.01)
    assert all(g["weight_decay"] == 5e-4 for g in groups)
    assert all(p is not model.proj.weight for g in groups for p in g["params"])


def test_optimizers_and_linear_scaling(tmp_path):
    cfg = tiny_config(
        tmp_path,
        train={
            "optimizer": "sgd",
            "nesterov": True,
            "momentum": 0.9,
            "lr": 0.01,
            "scale_lr": True,
            "base_batch_size": 8,
            "batch_size": 4,
            "accumulation_steps": 2,
        },
    )
    # total batch 4 x 2 processes x 2 accumulation = 16 -> lr x 2
    assert scaled_lr(cfg.train, world_size=2) == pytest.approx(0.02)
    opt = build_optimizer(MeanModel(), cfg.train, world_size=2)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["nesterov"] is True and opt.defaults["momentum"] == 0.9
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)
    for name, cls in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)):
        cfg2 = tiny_config(tmp_path, train={"optimizer": name, "lr": 3.5e-4})
        assert isinstance(build_optimizer(MeanModel(), cfg2.train), cls)


# ------------------------------------------------------------------------------------------ schedules
def _lrs(sched: WarmupLRScheduler, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.step()
    return out


def _opt(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_multistep_with_linear_warmup_per_iteration():
    # 4 iterations per epoch, warmup 1 epoch from 0.1, x0.1 at epochs 2 and 3
    sched = WarmupLRScheduler(
        _opt(),
        "multistep",
        iters_per_epoch=4,
        epochs=4,
        milestones=[2, 3],
        gamma=0.1,
        warmup_epochs=1,
        warmup_factor=0.1,
    )
    expected = [0.1, 0.325, 0.55, 0.775, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01]
    np.testing.assert_allclose(_lrs(sched, 16), expected, rtol=1e-12)


def test_cosine_and_constant_schedules():
    sched = WarmupLRScheduler(_opt(2.0), "cosine", iters_per_epoch=5, epochs=2)
    lrs = _lrs(sched, 11)
    np.testing.assert_allclose(
        lrs, [2.0 * 0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(11)], atol=1e-12
    )
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    sched = WarmupLRScheduler(
        _opt(0.5), "constant", iters_per_epoch=2, epochs=3, warmup_epochs=0.5, warmup_factor=0.2
    )
    np.testing.assert_allclose(_lrs(sched, 4), [0.1, 0.5, 0.5, 0.5])


def test_iteration_budget_sets_whole_epochs_and_the_schedule_length(tmp_path):
    cfg = tiny_config(tmp_path, train={"epochs": None, "iters": 100, "lr_schedule": "cosine", "lr": 1.0})
    assert cfg.train.num_epochs(30) == 4  # ceil(100 / 30): the budget rounded up to whole epochs
    assert cfg.train.num_epochs(100) == 1
    lrs = _lrs(build_scheduler(_opt(), cfg.train, 30), 121)
    assert lrs[60] == pytest.approx(0.5) and lrs[120] == pytest.approx(0.0, abs=1e-12)  # cosine, 120 steps
    cfg = tiny_config(tmp_path, train={"epochs": 3})
    assert cfg.train.num_epochs(30) == 3  # iters 0: train.epochs
    with pytest.raises(ConfigError, match="train.iters must be >= 0"):
        tiny_config(tmp_path, train={"iters": -1})
    with pytest.raises(ConfigError, match=r"train.epochs=3 and train.iters=100 are both set; keep one"):
        tiny_config(tmp_path, train={"epochs": 3, "iters": 100})



def test_scheduler_state_roundtrip_and_group_multipliers():
    p1, p2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 0.1}, {"params": [p2], "lr": 1.0}], lr=0.1)
    sched = WarmupLRScheduler(opt, "multistep", iters_per_epoch=2, epochs=3, milestones=[1], gamma=0.5)
    for _ in range(3):
        sched.step()
    assert sched.get_last_lr() == pytest.approx([0.05, 0.5])
    opt2 = torch.optim.SGD([{"params": [p1], "lr": 0.1}, {"params": [p2], "lr": 1.0}], lr=0.1)
    sched2 = WarmupLRScheduler(opt2, "multistep", iters_per_epoch=2, epochs=3, milestones=[1], gamma=0.5)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_temperature_annealing_values():
    assert annealed_temperature(0, 30.0, 1.0, 10) == 30.0
    assert annealed_temperature(5, 30.0, 1.0, 10) == pytest.approx(15.5)
    assert annealed_temperature(10, 30.0, 1.0, 10) == 1.0
    assert annealed_temperature(25, 30.0, 1.0, 10) == 1.0


# ----------------------------------------------------------------------------------------- checkpoints
def test_atomic_save_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "ckpt" / "last.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom during serialisation")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"model": {"w": torch.zeros(2)}, "bad": Unpicklable()}, target)
    # the old file is intact and no temp file is left behind
    assert os.listdir(target.parent) == ["last.pt"]
    assert torch.equal(load_checkpoint(target)["model"]["w"], torch.ones(2))


class _Payload:
    """Unpickling this would create a file: weights_only loading must refuse it without executing it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "x": _Payload(str(marker))}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(evil)
    assert not marker.exists()
    # a plain pickle (not a torch zip file) with the same payload is refused too
    raw = tmp_path / "raw.pt"
    with open(raw, "wb") as f:
        pickle.dump({"x": _Payload(str(marker))}, f)
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_checkpoint_errors_and_state_extraction(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    state = model_state_from_checkpoint(
        {"state_dict": {"module.a": torch.ones(1), "module.b": torch.zeros(1)}}
    )
    assert set(state) == {"a", "b"}
    with pytest.raises(CheckpointError, match="no model state_dict"):
        model_state_from_checkpoint({"epoch": 3})


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = (random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    atomic_save({"rng": [state]}, tmp_path / "rng.pt")
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"][0])
    got = (random.random(), np.random.randn(), np.random.rand(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


# ------------------------------------------------------------------------------------------- sampling
def test_resumable_batch_sampler_skips_seen_batches():
    from torch.utils.data.distributed import DistributedSampler

    ds = StandInClips(n=11)
    sampler = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=5)
    bs = ResumableBatchSampler(sampler, batch_size=3, drop_last=True)
    bs.set_epoch(4)
    full = list(bs)
    assert len(full) == len(bs) == 3
    assert all(e == 4 for batch in full for e, _ in batch)
    bs.set_epoch(4)
    bs.skip_batches = 2
    assert list(bs) == full[2:]
    assert list(bs) == full  # the skip applies to one pass only
    bs.set_epoch(5)
    assert list(bs) != full  # a different epoch, a different order


def test_train_loader_order_and_items_are_pure_functions_of_seed_epoch_index(tmp_path):
    cfg = tiny_config(tmp_path, data={"num_workers": 0}, train={"batch_size": 2})
    ds = StandInClips(n=7)
    loader = build_train_loader(ds, cfg)
    assert len(loader) == 3  # drop_last

    def epoch_batches(ld, epoch):
        ld.batch_sampler.set_epoch(epoch)
        return [(b["index"].tolist(), b["clip"]) for b in ld]

    a = epoch_batches(loader, 1)
    torch.manual_seed(123)  # the global RNG must neither matter nor be consumed
    state = torch.get_rng_state()
    b = epoch_batches(build_train_loader(ds, cfg), 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert [x[0] for x in a] == [x[0] for x in b]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b))
    # workers give the same items as the main process
    cfg_w = tiny_config(tmp_path, data={"num_workers": 2}, train={"batch_size": 2})
    c = epoch_batches(build_train_loader(ds, cfg_w), 1)
    assert [x[0] for x in a] == [x[0] for x in c]
    assert all(torch.equal(x[1], y[1]) for x, y in zip(a, c))
    assert epoch_batches(loader, 2)[0][0] != a[0][0] or epoch_batches(loader, 2)[1][0] != a[1][0]


def test_epoch_seeded_items_are_functions_of_seed_epoch_index_and_leave_global_rngs_alone():
    ds = EpochSeededDataset(StandInClips(n=3), seed=0)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    first = ds[(2, 1)]["clip"]
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert torch.equal(ds[(2, 1)]["clip"], first)
    assert not torch.equal(ds[(3, 1)]["clip"], first)
    assert item_seed(0, 2, 1) != item_seed(0, 1, 2)


def test_guards_in_loader_construction(tmp_path):
    cfg = tiny_config(tmp_path, train={"batch_size": 8})
    with pytest.raises(ValueError, match="empty"):
        build_train_loader(StandInClips(n=0), cfg)
    with pytest.raises(ValueError, match="batch_size=8 is larger than the 5 training samples"):
        build_train_loader(StandInClips(n=5), cfg)


def test_distributed_eval_shards_cover_dataset_with_padding(tmp_path):
    cfg = tiny_config(tmp_path)
    ds = StandInClips(n=5)
    seen = []
    for rank in range(2):
        loader = build_eval_loader(ds, cfg, batch_size=2, rank=rank, world_size=2)
        assert isinstance(loader, DataLoader)
        seen += [i for b in loader for i in b["index"].tolist()]
    assert len(seen) == 6 and sorted(set(seen)) == list(range(5))  # one padding duplicate
