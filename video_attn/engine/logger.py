"""Logging setup for the command-line tools: stderr on every rank (warnings only off rank 0), a text log file
on rank 0, and a TensorBoard writer on rank 0.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

_MARK = "_video_attn_handler"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(
    log_file: str | Path | None = None, rank: int = 0, level: int = logging.INFO
) -> logging.Logger:
    """Configure the ``video_attn`` logger; idempotent (handlers added by an earlier call are replaced)."""
    root = logging.getLogger("video_attn")
    for h in list(root.handlers):
        if getattr(h, _MARK, False):
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    # Records still propagate: the root logger has no handler in the tools, and keeping propagation lets an
    # application's (or pytest's) own handlers see them.
    fmt = logging.Formatter(_FORMAT if rank == 0 else f"[rank {rank}] {_FORMAT}", datefmt="%H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setLevel(level if rank == 0 else logging.WARNING)
    stream.setFormatter(fmt)
    setattr(stream, _MARK, True)
    root.addHandler(stream)
    if log_file is not None and rank == 0:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path, mode="a")
        fh.setLevel(level)
        fh.setFormatter(fmt)
        setattr(fh, _MARK, True)
        root.addHandler(fh)
    return root


def close_logging() -> None:
    root = logging.getLogger("video_attn")
    for h in list(root.handlers):
        if getattr(h, _MARK, False):
            root.removeHandler(h)
            h.close()


def make_tb_writer(log_dir: str | Path, rank: int = 0) -> Any:
    """A ``SummaryWriter`` on rank 0, None elsewhere."""
    if rank != 0:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))
