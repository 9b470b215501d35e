"""End to end on the synthetic data with the real builders: train / eval / extract for both tasks, the
guards, exact resume after SIGKILL, DDP on 2 gloo processes, and the command-line error paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from engine_testkit import REPO, action_config, python_tool, reid_config, run_tool, write_config

from video_attn.apis import evaluate, extract_features, train
from video_attn.engine.checkpoint import load_checkpoint

ACTION_KEYS = {"top1", "top5", "mean_class_accuracy", "num_videos"}
REID_KEYS = {
    "mAP",
    "mINP",
    "rank1",
    "rank5",
    "rank10",
    "rank20",
    "num_query",
    "num_gallery",
    "num_valid_queries",
    "protocol",
}


@pytest.fixture(scope="module")
def trained_action(synthetic_action, tmp_path_factory):
    work = tmp_path_factory.mktemp("action_run")
    cfg = action_config(synthetic_action, work, train={"epochs": 1})
    metrics = train(cfg)
    return cfg, work, metrics


def test_action_train_writes_outputs_and_eval_reproduces_validation(trained_action, tmp_path):
    cfg, work, metrics = trained_action
    assert ACTION_KEYS <= set(metrics) and metrics["num_videos"] == 9 and metrics["num_failed"] == 0
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "train.log", "metrics.json"):
        assert (work / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (work / "tb").iterdir())
    log = (work / "train.log").read_text()
    assert "epoch 1/1 done" in log and "failed/replaced samples 0" in log
    assert "CPU threads for torch ops: " in log  # the thread choice is logged
    saved = json.loads((work / "metrics.json").read_text())
    assert saved["epoch"] == 1 and saved["best_metric"] == "top1"
    ckpt = load_checkpoint(work / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["inner_iter"], ckpt["iteration"]) == (0, 4, 4)
    assert ckpt["config"]["model"]["arch"] == "tanet" and len(ckpt["rng"]) == 1
    assert ckpt["class_names"] == ["0", "1", "2"]  # no labels file: the class indices
    # the last epoch's validation equals a fresh evaluation of the last weights
    again = evaluate(cfg, work / "checkpoints" / "last.pt", split="val")
    for key in ACTION_KEYS:
        assert again[key] == pytest.approx(saved[key]), key


def test_action_feature_file(trained_action, tmp_path):
    cfg, work, _ = trained_action
    out = tmp_path / "feats.npz"
    extract_features(cfg, work / "checkpoints" / "best.pt", "val", out)
    with np.load(out, allow_pickle=False) as f:
        assert f["features"].dtype == np.float32 and f["features"].shape == (9, 64)
        assert f["labels"].dtype == np.int64 and sorted(set(f["labels"].tolist())) == [0, 1, 2]
        assert f["paths"].dtype.kind == "U" and all(p.endswith(".mp4") for p in f["paths"])
        assert f["index"].tolist() == list(range(9)) and f["valid"].all()


def test_reid_train_eval_extract(synthetic_reid, tmp_path):
    cfg = reid_config(synthetic_reid, tmp_path, model={"num_classes": None})  # the training identities
    metrics = train(cfg)
    assert REID_KEYS <= set(metrics) and metrics["protocol"] == "mars_official"
    assert 0.0 < metrics["mAP"] <= 100.0 and metrics["num_query"] > 0
    assert metrics["num_valid_queries"] == metrics["num_query"]  # the official protocol skips none
    last = tmp_path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    assert ckpt["config"]["model"]["num_classes"] == 16 and len(ckpt["class_names"]) == 16
    out = tmp_path / "query.npz"
    extract_features(cfg, last, "query", out)
    with np.load(out, allow_pickle=False) as f:
        assert f["features"].shape == (metrics["num_query"], 64) and f["features"].dtype == np.float32
        assert f["pids"].dtype == np.int64 and f["camids"].dtype == np.int64
        assert f["paths"].dtype.kind == "U" and f["paths"][0].endswith(".jpg")
        assert (f["num_frames"] > 0).all()


def test_guards_fail_before_training(synthetic_action, synthetic_reid, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        train(action_config(synthetic_action, tmp_path / "a", data={"train": {"ann_file": str(empty)}}))
    with pytest.raises(ValueError, match=r"model.num_classes=2 but the training labels span \[0, 2\]"):
        train(action_config(synthetic_action, tmp_path / "b", model={"num_classes": 2}))
    with pytest.raises(ValueError, match="train.batch_size=64 is larger than the 9 training samples"):
        train(action_config(synthetic_action, tmp_path / "c", train={"batch_size": 64}))
    with pytest.raises(ValueError, match="model.num_classes=10 but the ReID training set has 16 identities"):
        train(reid_config(synthetic_reid, tmp_path / "d", model={"num_classes": 10}))
    for name in "abcd":
        assert not (tmp_path / name / "checkpoints").exists()


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc {proc.returncode}) before it could be killed")
        if time.time() - start > timeout:
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.02)


def test_resume_after_sigkill_matches_uninterrupted_run(synthetic_action, tmp_path):
    # validation only after the last epoch keeps the three runs short
    overrides = {
        "train": {"epochs": 2, "checkpoint_every_iters": 1, "eval_every_epochs": 5},
        "data": {"num_workers": 1},
        "num_threads": 1,  # the same arithmetic in this process and in the subprocesses
    }
    # Reference: uninterrupted, in this process.
    train(action_config(synthetic_action, tmp_path / "ref", **overrides))
    reference = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["model"]

    work = tmp_path / "killed"
    cfg_path = write_config(action_config(synthetic_action, work, **overrides), tmp_path / "cfg.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen(
        python_tool("train.py", str(cfg_path)),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = work / "train.log"
    try:
        # 4 batches per epoch: stop the process as soon as it logs global step 6 (epoch 2, batch 2)
        _wait_for(lambda: log.is_file() and "(global 6)" in log.read_text(), proc)
        proc.send_signal(signal.SIGSTOP)
        ckpt = load_checkpoint(work / "checkpoints" / "last.pt")
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert ckpt["epoch"] == 1 and 0 < ckpt["inner_iter"] < 4, (ckpt["epoch"], ckpt["inner_iter"])

    resumed = run_tool(python_tool("train.py", str(cfg_path), "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming at epoch 2, batch {ckpt['inner_iter']}" in resumed.stderr
    final = load_checkpoint(work / "checkpoints" / "last.pt")
    assert final["iteration"] == 8
    for key, value in reference.items():
        assert torch.equal(final["model"][key], value), key


def test_ddp_two_gloo_processes_match_single_process(synthetic_action, tmp_path):
    # 9 val videos on 2 ranks: the DistributedSampler pads one duplicate that the evaluator must drop.
    cfg = action_config(synthetic_action, tmp_path / "ddp", train={"epochs": 1, "batch_size": 2})
    cfg_path = write_config(cfg, tmp_path / "ddp.yaml")
    proc = run_tool(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(REPO / "tools" / "train.py"),
            str(cfg_path),
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["inner_iter"] == 2  # 9 -> 5/rank -> 2
    single = evaluate(cfg, tmp_path / "ddp" / "checkpoints" / "last.pt", split="val")
    assert single["num_videos"] == ddp_metrics["num_videos"] == 9
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert single[key] == pytest.approx(ddp_metrics[key], abs=1e-9), key


def test_command_line_errors_are_one_line(synthetic_action, tmp_path):
    cfg_path = write_config(action_config(synthetic_action, tmp_path / "w"), tmp_path / "c.yaml")
    proc = run_tool(python_tool("eval.py", str(cfg_path), "--checkpoint", str(tmp_path / "nope.pt")))
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith(
        "error: checkpoint not found"
    )
    proc = run_tool(python_tool("train.py", str(cfg_path), "train.lrr=0.1"))
    assert proc.returncode == 1 and "unknown config key 'train.lrr'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_tool(python_tool("extract_features.py", "--help"))
    assert proc.returncode == 0 and "--split" in proc.stdout
