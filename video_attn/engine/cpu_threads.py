"""How many threads torch's CPU ops use in a training or evaluation process.

torch's default is one intra-op thread per core of the machine. That claims every core for the main process
although the DataLoader workers (and other ``torchrun`` processes on the node) need cores too, and it makes
each parallel op wait at a barrier for its slowest thread: when anything else takes a core, a thread is
descheduled for a whole time slice at every barrier. On a 2-core machine a small model then trains 10-30x
slower next to one other CPU-bound process instead of 2x (``benchmarks/contention.py``).

The default (``num_threads: 0``) therefore gives each process the cores it may run on
(``os.sched_getaffinity``), shared among the ``torchrun`` processes of the node, minus one per DataLoader
worker, and at least 1. An ``OMP_NUM_THREADS`` set in the environment (``torchrun`` sets 1 when it starts
several processes) is kept. A positive ``num_threads`` is used as given.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: ``taskset``, a cgroup cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_threads(num_workers: int) -> tuple[int, str]:
    """The intra-op thread count of a process with ``num_workers`` DataLoader workers, one of the node's
    ``LOCAL_WORLD_SIZE`` processes (torchrun sets it; 1 otherwise), and why (for the log)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), f"OMP_NUM_THREADS={env}"
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = available_cores()
    share = cores // max(local_world_size, 1)
    threads = max(1, share - max(num_workers, 0))
    why = f"{cores} cores"
    if local_world_size > 1:
        why += f" / {local_world_size} processes"
    return threads, f"{why} - {max(num_workers, 0)} data workers"


def set_num_threads(requested: int, num_workers: int) -> int:
    """Set torch's intra-op threads: ``requested`` when positive, else :func:`default_num_threads`. Logs the
    choice and how to change it; returns the count."""
    if requested > 0:
        threads, why = requested, "num_threads in the config"
    else:
        threads, why = default_num_threads(num_workers)
    torch.set_num_threads(threads)
    logger.info("CPU threads for torch ops: %d (%s; override with num_threads=N)", threads, why)
    return threads


def restores_cpu_threads(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate an entry point that calls :func:`set_num_threads` so that the caller's thread count is back
    when it returns (a notebook or test process goes on with its own setting)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        previous = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper
