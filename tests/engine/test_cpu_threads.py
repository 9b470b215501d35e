"""The CPU thread policy of training and evaluation processes (video_attn.engine.cpu_threads)."""

from __future__ import annotations

import logging

import pytest
import torch

from video_attn.config import ConfigError, config_from_dict
from video_attn.engine import cpu_threads


@pytest.fixture
def cores(monkeypatch):
    """Pretend the process may run on ``n`` cores, with no OMP_NUM_THREADS / LOCAL_WORLD_SIZE set."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)

    def set_cores(n: int) -> None:
        monkeypatch.setattr(cpu_threads.os, "sched_getaffinity", lambda pid: set(range(n)))

    return set_cores


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "n_cores, workers, local_world_size, expected",
    [
        (2, 0, 1, 2),  # no workers: every core
        (2, 2, 1, 1),  # the quick start on 2 cores: the workers need cores too
        (2, 4, 1, 1),  # never below 1
        (16, 4, 1, 12),
        (16, 4, 2, 4),  # two torchrun processes share the node: 8 cores each, minus 4 workers
    ],
)
def test_default_threads_from_cores_workers_and_processes(
    cores, monkeypatch, n_cores, workers, local_world_size, expected
):
    cores(n_cores)
    if local_world_size > 1:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world_size))
    threads, why = cpu_threads.default_num_threads(workers)
    assert threads == expected
    assert f"{n_cores} cores" in why and f"{workers} data workers" in why


def test_omp_num_threads_in_the_environment_is_kept(cores, monkeypatch):
    cores(16)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads.default_num_threads(4) == (3, "OMP_NUM_THREADS=3")


def test_set_num_threads_applies_and_logs_the_choice(cores, restore_threads, caplog):
    cores(2)
    with caplog.at_level(logging.INFO, logger="video_attn.engine.cpu_threads"):
        assert cpu_threads.set_num_threads(0, num_workers=2) == 1
    assert torch.get_num_threads() == 1
    expected = "CPU threads for torch ops: 1 (2 cores - 2 data workers; override with num_threads=N)"
    assert expected in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="video_attn.engine.cpu_threads"):
        assert cpu_threads.set_num_threads(2, num_workers=2) == 2  # the config's value wins
    assert torch.get_num_threads() == 2
    assert "num_threads in the config" in caplog.text


def test_config_key_default_and_validation():
    assert config_from_dict({}).num_threads == 0
    assert config_from_dict({}, ["num_threads=3"]).num_threads == 3
    with pytest.raises(ConfigError, match="num_threads must be >= 0"):
        config_from_dict({"num_threads": -1})


def test_entry_points_restore_the_callers_thread_count(restore_threads):
    @cpu_threads.restores_cpu_threads
    def entry_point() -> int:
        cpu_threads.set_num_threads(1, num_workers=0)
        return torch.get_num_threads()

    torch.set_num_threads(2)
    assert entry_point() == 1
    assert torch.get_num_threads() == 2
