"""A training run never destroys an earlier one: a fresh run into a used work_dir stops before writing
anything (single process and under torchrun: every rank follows rank 0), ``--overwrite`` starts over,
``--resume`` continues."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from engine_testkit import REPO, action_config, run_tool, write_config

from video_attn.apis import train
from video_attn.apis.runtime import prepare_work_dir
from video_attn.engine import distributed as du
from video_attn.engine.checkpoint import load_checkpoint

OLD_LOG = "earlier run's log line\n"


def fake_earlier_run(work: Path) -> dict[str, bytes]:
    """The files an earlier run leaves, with recognisable contents; returns them by relative path."""
    files = {
        "checkpoints/last.pt": b"earlier last.pt",
        "checkpoints/best.pt": b"earlier best.pt",
        "tb/events.out.tfevents.1.host": b"earlier events",
        "metrics.json": b'{"top1": 100.0}\n',
        "train.log": OLD_LOG.encode(),
    }
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    return files


def snapshot(work: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time, by relative path."""
    files = [p for p in work.rglob("*") if p.is_file()]
    return {str(p.relative_to(work)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def one_epoch(root: Path, work: Path, epochs: int = 1):
    return action_config(root, work, train={"epochs": epochs}, data={"val": {"ann_file": None}})


def test_fresh_run_into_a_used_work_dir_stops_and_touches_nothing(synthetic_action, tmp_path,
                                                                  capsys, load_tool):
    work = tmp_path / "run"
    fake_earlier_run(work)
    before = snapshot(work)
    with pytest.raises(ValueError, match=r"holds the results of an earlier run .*--resume.*--overwrite"):
        train(one_epoch(synthetic_action, work))
    assert snapshot(work) == before

    cfg_path = write_config(one_epoch(synthetic_action, work), tmp_path / "cfg.yaml")
    assert load_tool("train").main([str(cfg_path)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: work_dir {work} holds the results of an earlier run")
    assert "--resume" in line and "--overwrite" in line
    assert snapshot(work) == before


def test_other_ranks_follow_the_decision_of_rank_0(tmp_path, monkeypatch):
    """A rank > 0 neither looks at the work_dir nor deletes: it raises (or not) on rank 0's answer."""
    monkeypatch.setattr(du, "is_main_process", lambda: False)
    monkeypatch.setattr(du, "broadcast_object", lambda obj: ["checkpoints/last.pt"] if obj == [] else obj)
    with pytest.raises(ValueError, match=r"\(checkpoints/last.pt\); continue that run with --resume"):
        prepare_work_dir(tmp_path / "empty_here", resume=False, overwrite=False)
    work = tmp_path / "used"
    fake_earlier_run(work)
    before = snapshot(work)
    assert prepare_work_dir(work, resume=False, overwrite=True) == ["checkpoints/last.pt"]
    assert snapshot(work) == before  # rank 0 deletes, the others do not


@pytest.mark.slow
def test_torchrun_ranks_agree_on_a_used_work_dir(synthetic_action, tmp_path):
    work = tmp_path / "ddp"
    fake_earlier_run(work)
    before = snapshot(work)
    cfg_path = write_config(one_epoch(synthetic_action, work), tmp_path / "ddp.yaml")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = run_tool([*torchrun, str(REPO / "tools" / "train.py"), str(cfg_path)], timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count(f"error: work_dir {work} holds the results of an earlier run") >= 2  # each rank
    assert snapshot(work) == before


def test_overwrite_starts_over_and_resume_continues(synthetic_action, tmp_path):
    work = tmp_path / "run"
    fake_earlier_run(work)
    with pytest.raises(ValueError, match="give one of them"):
        train(one_epoch(synthetic_action, work), resume=True, overwrite=True)

    train(one_epoch(synthetic_action, work), overwrite=True)
    assert load_checkpoint(work / "checkpoints" / "last.pt")["iteration"] == 4  # a real checkpoint again
    assert not (work / "checkpoints" / "best.pt").exists() and not (work / "metrics.json").exists()
    assert "events.out.tfevents.1.host" not in {p.name for p in (work / "tb").iterdir()}
    log = (work / "train.log").read_text()
    assert OLD_LOG not in log and "--overwrite: deleted the outputs of the earlier run" in log

    train(one_epoch(synthetic_action, work, epochs=2), resume=True)
    assert load_checkpoint(work / "checkpoints" / "last.pt")["iteration"] == 8
    resumed_log = (work / "train.log").read_text()
    assert resumed_log.startswith(log) and "resuming at epoch 2, batch 0" in resumed_log  # appended
