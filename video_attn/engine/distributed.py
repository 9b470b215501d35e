"""Process-group helpers: initialisation from torchrun's environment, rank queries and object gathering.

Single-process runs never create a process group; every helper then degrades to the trivial answer, so
library code calls them unconditionally. ``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; the backend is
nccl when the run uses CUDA and gloo otherwise (CPU tests run 2 gloo processes).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device=cuda but torch.cuda.is_available() is False; use device=cpu or device=auto"
        )
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r}; valid: auto, cpu, cuda")
    return torch.device(name)


def init_distributed(device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables (no-op when WORLD_SIZE <= 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            backend=backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s)
        )
        logger.info("joined process group: backend=%s rank=%d/%d", backend, rank, world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device this rank computes on (``cuda:<local_rank>`` under torchrun on GPU)."""
    if device.type == "cuda":
        return torch.device("cuda", info.local_rank if info.distributed else torch.cuda.current_device())
    return device


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` without a process group)."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(value: float, device: torch.device) -> float:
    """Sum of a Python number over ranks (used for counters such as failed samples)."""
    if get_world_size() == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
