"""Fixtures of the engine tests; helpers live in ``engine_testkit`` (this directory is put on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_testkit import ACTION_GEN_ARGS, python_tool, run_tool  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_action(tmp_path_factory) -> Path:
    """A tiny synthetic action dataset written by the real generator (4 classes, few short small videos)."""
    out = tmp_path_factory.mktemp("synthetic_action")
    proc = run_tool(python_tool("make_synthetic.py", "action", "--out", str(out), *ACTION_GEN_ARGS))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def synthetic_reid(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic_reid")
    from video_attn.data.synthetic.reid import make_reid_dataset

    make_reid_dataset(out, seed=0)
    return out
