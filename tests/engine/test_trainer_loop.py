"""The training loop on stand-ins: exact resume, NaN guard, SIGINT checkpoint, accumulation, hooks."""

from __future__ import annotations

import os
import signal

import pytest
import torch
import torch.nn.functional as F
from engine_testkit import MeanModel, StandInClips, tiny_config

from video_attn.data.build import build_train_loader
from video_attn.engine.checkpoint import load_checkpoint
from video_attn.engine.hooks import HookBase, PeriodicCheckpointer, TemperatureHook
from video_attn.engine.lr_scheduler import build_scheduler
from video_attn.engine.optim import build_optimizer
from video_attn.engine.trainer import NonFiniteLossError, Trainer, TrainingInterrupted


def ce_loss(logits, batch):
    return F.cross_entropy(logits, batch["label"]), {"ce": 0.0}


def make_trainer(tmp_path, n=10, hooks=(), loss_fn=ce_loss, **train):
    cfg = tiny_config(tmp_path, train=dict({"epochs": 2, "batch_size": 2, "lr": 0.1}, **train))
    torch.manual_seed(0)
    model = MeanModel()
    loader = build_train_loader(StandInClips(n=n), cfg)
    opt = build_optimizer(model, cfg.train)
    steps = -(-len(loader) // cfg.train.accumulation_steps)
    sched = build_scheduler(opt, cfg.train, steps)
    trainer = Trainer(
        model,
        opt,
        sched,
        loader,
        loss_fn,
        tmp_path,
        cfg.train.epochs,
        accumulation_steps=cfg.train.accumulation_steps,
        clip_grad=cfg.train.clip_grad,
        config=cfg.to_dict(),
    )
    trainer.register_hooks([*hooks, PeriodicCheckpointer(every_iters=1)])
    return trainer


class StopAt(HookBase):
    """Sends a real SIGINT to this process after the given optimiser step."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iter == self.iteration:
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_checkpoint_then_resume_equals_uninterrupted(tmp_path):
    reference = make_trainer(tmp_path / "ref")
    reference.train()
    ref_state = reference.unwrapped_model.state_dict()
    assert reference.iter == 10

    first = make_trainer(tmp_path / "run", hooks=[StopAt(7)])
    with pytest.raises(TrainingInterrupted) as info:
        first.train()
    assert info.value.checkpoint == tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(info.value.checkpoint)
    assert (ckpt["epoch"], ckpt["inner_iter"], ckpt["iteration"]) == (1, 2, 7)  # mid-epoch 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    resumed = make_trainer(tmp_path / "run")
    torch.manual_seed(999)  # whatever the RNG is now, the checkpoint's RNG state must win
    resumed.load_checkpoint_state(ckpt)
    assert (resumed.start_epoch, resumed.start_inner_iter) == (1, 2)
    resumed.train()
    assert resumed.iter == 10
    for k, v in resumed.unwrapped_model.state_dict().items():
        assert torch.equal(v, ref_state[k]), k


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def loss_fn(logits, batch):
        loss = F.cross_entropy(logits, batch["label"])
        return (loss * float("nan") if trainer.iter >= 3 else loss), {}

    trainer = make_trainer(tmp_path, loss_fn=loss_fn)
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 1, iteration 4"):
        trainer.train()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["iteration"] == 3
    for k, v in ckpt["model"].items():
        assert torch.isfinite(v.float()).all(), k
    # no optimiser step ran on the NaN loss: the parameters are those of the last checkpoint
    # (BN running statistics of the failed forward are not parameters and are not saved)
    for k, v in trainer.unwrapped_model.named_parameters():
        assert torch.equal(v, ckpt["model"][k]), k


def test_gradient_accumulation_matches_large_batch(tmp_path):
    """Two accumulated batches of 2 equal one batch of 4 (plain SGD, no BN noise: model in eval-like BN)."""

    def run(batch_size, accumulation):
        trainer = make_trainer(
            tmp_path / f"acc{batch_size}",
            n=8,
            batch_size=batch_size,
            accumulation_steps=accumulation,
            epochs=1,
            momentum=0.0,
            weight_decay=0.0,
        )
        trainer.unwrapped_model.bn = torch.nn.Identity()  # BN statistics depend on the micro-batch
        trainer.unwrapped_model.dropout = torch.nn.Identity()
        trainer.optimizer = torch.optim.SGD(trainer.unwrapped_model.parameters(), lr=0.1)
        trainer.scheduler = build_scheduler(trainer.optimizer, tiny_config(tmp_path).train, 2)
        trainer.hooks.clear()
        # one shuffled order for both: the sampler depends on (seed, epoch) only; regroup into batches of 4
        trainer.train()
        return trainer

    big = run(4, 1)
    small = run(2, 2)
    assert big.iter == small.iter == 2
    for (name, a), b in zip(big.unwrapped_model.named_parameters(), small.unwrapped_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_temperature_hook_sets_value_on_modules(tmp_path):
    seen = []

    class Tempered(torch.nn.Module):
        def set_temperature(self, t: float) -> None:
            seen.append(t)

    trainer = make_trainer(tmp_path, hooks=[TemperatureHook(30.0, 1.0, 2)], epochs=3)
    trainer.unwrapped_model.extra = Tempered()
    trainer.train()
    assert seen == [30.0, 15.5, 1.0]
