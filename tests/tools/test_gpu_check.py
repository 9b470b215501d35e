"""benchmarks/gpu_check.py, the one-shot check of every CUDA path: on a machine without a GPU it says so in
one line and exits 0; with ``--cpu-smoke`` its whole orchestration (data generation, the real training /
evaluation / decoding pipelines, error handling, the table, ``--out``) runs on the CPU with tiny models, and
every row of the table ends with a status: ``ran``, or ``skipped:`` / ``failed:`` with a reason."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
ROWS = ["1", "2", "3", "4", "5", "6", "7", "8a", "8b", "9a", "9b", "9c", "9d"]
CPU_ROWS = ["1", "6", "7", "8a", "8b", "9b"]  # must run on the CPU (9a: decord, 9c: torchcodec may be absent)
CUDA_ROWS = ["2", "3", "4", "5", "9d"]


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The markdown table's cells by row key (``1. TANet ...`` -> ``1``)."""
    rows = {}
    for line in stdout.splitlines():
        if not line.startswith("| ") or line.startswith("| check") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0].split(".")[0]] = cells
    return rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run for real")
def test_without_cuda_it_prints_the_skip_line_and_exits_0():
    res = run_script()
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "skipped: no CUDA device (torch.cuda.is_available() is False)"


def test_cpu_smoke_fills_every_row_with_a_status(tmp_path):
    out = tmp_path / "gpu_check.json"
    res = run_script("--cpu-smoke", "--out", str(out))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "torch " in res.stdout and "decord" in res.stdout  # the environment comes first
    rows = table_rows(res.stdout)
    assert list(rows) == ROWS
    for key, cells in rows.items():
        assert len(cells) == 6, cells
        status = cells[-1]
        assert status.startswith(("ran", "skipped: ", "failed: ")), (key, status)
        if not status.startswith("ran"):
            reason = status.split(":", 1)[1].strip()
            assert reason and not reason.startswith("("), (key, status)  # a reason, not only the seconds
    for key in CPU_ROWS:
        assert rows[key][-1].startswith("ran"), (key, rows[key])
        assert rows[key][2], (key, "no throughput")
    for key in ("1", "6", "7"):
        assert rows[key][3].endswith("%"), (key, "no data-time share")
    for key in CUDA_ROWS:
        assert rows[key][-1].startswith("skipped: needs CUDA"), (key, rows[key])
    assert "gloo" in rows["6"][-1]

    report = json.loads(out.read_text())
    assert report["finished"] is True
    assert [r["key"] for r in report["rows"]] == ROWS
    assert {r["key"]: r["status"] for r in report["rows"]}["1"] == "ran"


def load_script(monkeypatch):
    """benchmarks/gpu_check.py as a module (its folder on sys.path, as when it runs as a script)."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_failing_or_hanging_check_becomes_a_row_and_the_run_goes_on(monkeypatch, capsys):
    gpu_check = load_script(monkeypatch)

    def broken(ctx, row, budget):
        raise RuntimeError("boom\nsecond line")

    def hanging(ctx, row, budget):
        time.sleep(30)

    monkeypatch.setitem(gpu_check.CHECKS, "8a", broken)
    monkeypatch.setitem(gpu_check.CHECKS, "9a", hanging)
    monkeypatch.setattr(gpu_check, "SMOKE_BUDGET", 1.0)
    start = time.perf_counter()
    assert gpu_check.main(["--cpu-smoke", "--only", "8a,9a,9b"]) == 0
    assert time.perf_counter() - start < 20
    captured = capsys.readouterr()
    rows = table_rows(captured.out)
    assert rows["1"][-1].startswith("skipped: not selected")
    assert rows["8a"][-1].startswith("failed: RuntimeError: boom ("), rows["8a"]
    assert rows["9a"][-1].startswith("failed: time budget of 1 s exceeded"), rows["9a"]
    assert rows["9b"][-1].startswith("ran"), rows["9b"]
    assert "RuntimeError: boom" in captured.err  # the traceback
