"""The training loop on stand-ins: exact resume, NaN guard, SIGINT checkpoint, accumulation, clipping, AMP
scaling, hooks (order, names, state in checkpoints), metric writing."""

from __future__ import annotations

import gc
import logging
import os
import signal
import weakref

import pytest
import torch
import torch.nn.functional as F
from engine_testkit import MeanModel, StandInClips, tiny_config

from video_attn.data.build import build_train_loader
from video_attn.engine.checkpoint import load_checkpoint
from video_attn.engine.hooks import EvalHook, HookBase, PeriodicCheckpointer, TemperatureHook
from video_attn.engine.lr_scheduler import WarmupLRScheduler, build_scheduler
from video_attn.engine.optim import build_optimizer
from video_attn.engine.train_loop import TrainLoop
from video_attn.engine.trainer import NonFiniteLossError, Trainer, TrainingInterrupted


def ce_loss(logits, batch):
    return F.cross_entropy(logits, batch["label"]), {"ce": 0.0}


def make_trainer(
    tmp_path,
    n=10,
    hooks=(),
    loss_fn=ce_loss,
    model=None,
    optimizer=None,
    tb_writer=None,
    amp_dtype=None,
    **train,
):
    cfg = tiny_config(tmp_path, train=dict({"epochs": 2, "batch_size": 2, "lr": 0.1}, **train))
    torch.manual_seed(0)
    model = model if model is not None else MeanModel()
    loader = build_train_loader(StandInClips(n=n), cfg)
    opt = optimizer if optimizer is not None else build_optimizer(model, cfg.train)
    steps = -(-len(loader) // max(1, cfg.train.accumulation_steps))
    trainer = Trainer(
        model,
        opt,
        build_scheduler(opt, cfg.train, steps),
        loader,
        loss_fn,
        tmp_path,
        cfg.train.epochs,
        accumulation_steps=cfg.train.accumulation_steps,
        clip_grad=cfg.train.clip_grad,
        config=cfg.to_dict(),
        tb_writer=tb_writer,
        amp_dtype=amp_dtype,
        log_every_iters=cfg.train.log_every_iters,
    )
    trainer.register_hooks([*hooks, PeriodicCheckpointer(every_iters=1)])
    return trainer


class StopAt(HookBase):
    """Sends a real SIGINT to this process after the given optimiser step."""

    name = "stop_at"

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iter == self.iteration:
            os.kill(os.getpid(), signal.SIGINT)


def test_sigint_checkpoint_then_resume_equals_uninterrupted(tmp_path):
    # whatever this process had (a CI runner may start it with SIGINT ignored) must be back afterwards
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
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
    assert ckpt["scheduler"] == {"last_iter": 7} and ckpt["batches_per_epoch"] == 5
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored

    resumed = make_trainer(tmp_path / "run")
    torch.manual_seed(999)  # whatever the RNG is now, the checkpoint's RNG state must win
    resumed.load_checkpoint_state(ckpt)
    assert (resumed.start_epoch, resumed.start_inner_iter) == (1, 2)
    resumed.train()
    assert resumed.iter == 10
    for k, v in resumed.unwrapped_model.state_dict().items():
        assert torch.equal(v, ref_state[k]), k


def test_checkpoint_holds_the_whole_training_state(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.train()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert set(ckpt) == {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "extra",
        "epoch",
        "inner_iter",
        "iteration",
        "batches_per_epoch",
        "world_size",
        "rng",
        "sampler",
        "hooks",
        "config",
        "class_names",
    }
    assert (ckpt["epoch"], ckpt["inner_iter"], ckpt["iteration"], ckpt["world_size"]) == (0, 5, 5, 1)
    assert ckpt["scaler"] is None  # fp32: no gradient scaling
    assert ckpt["config"] == trainer.checkpointer.config and len(ckpt["rng"]) == 1
    for k, v in trainer.unwrapped_model.state_dict().items():
        assert torch.equal(ckpt["model"][k], v), k
    # hook states are keyed by the hooks' names, in the default order
    assert list(ckpt["hooks"]) == ["lr_scheduler", "metrics", "checkpointer", "stop_on_signal"]


def test_resume_refuses_other_batches_per_epoch(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.train()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    other = make_trainer(tmp_path / "other", n=12)
    with pytest.raises(ValueError, match="checkpoint has 5 batches per epoch but this run has 6"):
        other.load_checkpoint_state(ckpt)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def loss_fn(logits, batch):
        loss = F.cross_entropy(logits, batch["label"])
        return (loss * float("nan") if trainer.iter >= 3 else loss), {}

    trainer = make_trainer(tmp_path, loss_fn=loss_fn)
    last = tmp_path / "checkpoints" / "last.pt"
    message = f"loss is nan at epoch 1, iteration 4 .*last good checkpoint is {last}"
    with pytest.raises(NonFiniteLossError, match=message):
        trainer.train()
    ckpt = load_checkpoint(last)
    assert ckpt["iteration"] == 3
    for k, v in ckpt["model"].items():
        assert torch.isfinite(v.float()).all(), k
    # no optimiser step ran on the NaN loss: the parameters are those of the last checkpoint
    # (BN running statistics of the failed forward are not parameters and are not saved)
    for k, v in trainer.unwrapped_model.named_parameters():
        assert torch.equal(v, ckpt["model"][k]), k


def _plain_model():
    model = MeanModel()
    model.bn = torch.nn.Identity()  # BN statistics depend on the micro-batch
    model.dropout = torch.nn.Identity()
    return model


def test_gradient_accumulation_matches_large_batch(tmp_path):
    """Two accumulated batches of 2 equal one batch of 4 (plain SGD, no BN, no dropout)."""

    def run(batch_size, accumulation):
        torch.manual_seed(0)
        model = _plain_model()
        trainer = make_trainer(
            tmp_path / f"acc{batch_size}",
            n=8,
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            batch_size=batch_size,
            accumulation_steps=accumulation,
            epochs=1,
            lr_schedule="constant",
        )
        # the sampler's order depends on (seed, epoch) only: batches of 2 regroup into the batches of 4
        trainer.train()
        return trainer

    big = run(4, 1)
    small = run(2, 2)
    assert big.iter == small.iter == 2
    assert small.last_step.batches == 2 and small.last_step.samples == 4
    for (name, a), b in zip(big.unwrapped_model.named_parameters(), small.unwrapped_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_one_step_equals_written_out_sgd_with_clipping(tmp_path):
    """The step is loss -> backward -> clip_grad_norm_ -> SGD, written out here on a copy of the model."""
    torch.manual_seed(0)
    model = _plain_model()
    expected = _plain_model()
    expected.load_state_dict(model.state_dict())
    trainer = make_trainer(
        tmp_path,
        n=4,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        batch_size=4,
        epochs=1,
        clip_grad=0.01,
        lr_schedule="constant",
    )
    batch = next(iter(trainer.train_loader))
    F.cross_entropy(expected(batch["clip"]), batch["label"]).backward()
    grads = [p.grad for p in expected.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    with torch.no_grad():
        for p, g in zip(expected.parameters(), grads):
            p -= 0.1 * g * min(1.0, 0.01 / (float(norm) + 1e-6))
    trainer.train()
    assert trainer.last_step.grad_norm == pytest.approx(float(norm), rel=1e-5)
    assert float(norm) > 0.01  # the clip was active
    for (name, a), b in zip(trainer.unwrapped_model.named_parameters(), expected.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_fp16_scaler_state_is_saved_and_restored(tmp_path):
    """fp16 autocast scales the loss with a GradScaler; its state is part of the checkpoint."""
    trainer = make_trainer(tmp_path, epochs=1, amp_dtype=torch.float16)
    trainer.train()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["scaler"]["scale"] == trainer.scaler.get_scale()
    for name, p in trainer.unwrapped_model.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name
    resumed = make_trainer(tmp_path / "other", epochs=1, amp_dtype=torch.float16)
    ckpt["scaler"]["scale"] = 1024.0  # as if overflows had halved it
    resumed.load_checkpoint_state(ckpt)
    assert resumed.scaler.get_scale() == 1024.0


def test_hooks_run_in_documented_order_at_every_call_point(tmp_path):
    calls = []

    class Probe(HookBase):
        def __init__(self, name):
            self.name = name

        def before_train(self):
            calls.append(("before_train", self.name))

        def before_epoch(self):
            calls.append(("before_epoch", self.name, self.trainer.epoch))

        def before_step(self):
            calls.append(("before_step", self.name, self.trainer.iter))

        def after_step(self):
            calls.append(("after_step", self.name, self.trainer.iter))

        def after_epoch(self):
            calls.append(("after_epoch", self.name, self.trainer.epoch))

        def after_train(self):
            calls.append(("after_train", self.name))

    trainer = make_trainer(tmp_path, n=4, hooks=[Probe("a"), Probe("b")], epochs=2)
    assert [h.name for h in trainer.hooks] == [
        "lr_scheduler",
        "metrics",
        "a",
        "b",
        "checkpointer",
        "stop_on_signal",
    ]
    trainer.train()
    expected = [("before_train", "a"), ("before_train", "b")]
    it = 0
    for epoch in range(2):
        expected += [("before_epoch", "a", epoch), ("before_epoch", "b", epoch)]
        for _ in range(2):
            expected += [("before_step", "a", it), ("before_step", "b", it)]
            it += 1
            expected += [("after_step", "a", it), ("after_step", "b", it)]
        expected += [("after_epoch", "a", epoch), ("after_epoch", "b", epoch)]
    expected += [("after_train", "a"), ("after_train", "b")]
    assert calls == expected


def test_hook_names_are_required_and_unique(tmp_path):
    class Nameless(HookBase):
        pass

    trainer = make_trainer(tmp_path)
    with pytest.raises(ValueError, match="hook Nameless has no name; set the class attribute `name`"):
        trainer.register_hooks([Nameless()])
    with pytest.raises(ValueError, match="a hook named 'checkpointer' is already registered"):
        trainer.register_hooks([PeriodicCheckpointer()])


def test_hook_state_is_restored_by_name(tmp_path):
    def eval_fn(model):
        return {"top1": 50.0}

    first = make_trainer(tmp_path / "a", hooks=[EvalHook(eval_fn, "top1", work_dir=tmp_path / "a")], epochs=1)
    first.train()
    ckpt = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert ckpt["hooks"]["eval"] == {"best": 50.0, "best_epoch": 0, "metric": "top1"}
    resumed_eval = EvalHook(eval_fn, "top1", work_dir=tmp_path / "b")
    resumed = make_trainer(tmp_path / "b", hooks=[resumed_eval], epochs=1)
    resumed.load_checkpoint_state(ckpt)
    assert (resumed_eval.best, resumed_eval.best_epoch) == (50.0, 0)


def test_loop_without_checkpointer_names_the_missing_piece(tmp_path):
    cfg = tiny_config(tmp_path)
    model = MeanModel()
    loop = TrainLoop(
        model,
        build_optimizer(model, cfg.train),
        build_train_loader(StandInClips(n=4), cfg),
        ce_loss,
        max_epochs=1,
    )
    loop.register_hooks([PeriodicCheckpointer()])
    with pytest.raises(ValueError, match="hook 'checkpointer' writes checkpoints but the training loop has"):
        loop.train()


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="train.accumulation_steps must be >= 1, got 0"):
        make_trainer(tmp_path, accumulation_steps=0)
    with pytest.raises(ValueError, match="train.clip_grad must be positive"):
        make_trainer(tmp_path, clip_grad=-1.0)


def test_temperature_hook_sets_value_on_modules(tmp_path):
    seen = []

    class Tempered(torch.nn.Module):
        def set_temperature(self, t: float) -> None:
            seen.append(t)

    trainer = make_trainer(tmp_path, hooks=[TemperatureHook(30.0, 1.0, 2)], epochs=3)
    trainer.unwrapped_model.extra = Tempered()
    trainer.train()
    assert seen == [30.0, 15.5, 1.0]


class RecordingWriter:
    def __init__(self):
        self.scalars, self.flushed = [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushed = True


def test_lr_steps_every_iteration_and_metrics_are_written(tmp_path, caplog):
    writer = RecordingWriter()
    trainer = make_trainer(tmp_path, n=4, tb_writer=writer, epochs=2, milestones=[1], lr_schedule="multistep")
    assert isinstance(trainer.scheduler, WarmupLRScheduler)
    with caplog.at_level(logging.INFO, logger="video_attn"):
        trainer.train()
    lrs = [(step, v) for tag, v, step in writer.scalars if tag == "lr/base"]
    # logged after each step's schedule update: iterations 1..4, x0.1 from epoch 1 (iteration 2) on
    assert [s for s, _ in lrs] == [1, 2, 3, 4]
    assert [v for _, v in lrs] == pytest.approx([0.1, 0.01, 0.01, 0.01])
    tags = {tag for tag, _, _ in writer.scalars}
    assert {"train/loss", "train/ce", "time/data_fraction", "time/clips_per_s", "epoch/loss"} <= tags
    assert {"epoch/num_failed", "epoch/clips_per_s"} <= tags and writer.flushed
    epoch_loss = [v for tag, v, step in writer.scalars if tag == "epoch/loss"]
    step_loss = [v for tag, v, step in writer.scalars if tag == "train/loss"]
    assert epoch_loss == pytest.approx([sum(step_loss[:2]) / 2, sum(step_loss[2:]) / 2])
    text = caplog.text
    assert "epoch 1 iter 2/2 (global 2) loss" in text
    assert "epoch 2/2 done: loss" in text and "| 2 batches" in text and "failed/replaced samples 0" in text


def test_trainer_goes_with_its_last_reference(tmp_path):
    # hooks and checkpointer hold the loop weakly: no reference cycle keeps the trainer (and the loader's
    # persistent workers, whose late shutdown costs DataLoader's 5 s join per worker) until a gc pass
    trainer = make_trainer(tmp_path, n=4, epochs=1)
    trainer.train()
    alive = weakref.ref(trainer)
    loader = weakref.ref(trainer.train_loader)
    gc.disable()
    try:
        del trainer
        assert alive() is None and loader() is None
    finally:
        gc.enable()
