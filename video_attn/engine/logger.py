"""Logging setup for the command-line tools: stderr on every rank (warnings only off rank 0), a text log file
on rank 0, and a TensorBoard writer on rank 0.

Console lines go through ``tqdm.write``, which clears the progress bars on the terminal (training, evaluation,
feature extraction) before the line and redraws them after it, so that log lines never tear a bar.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

_MARK = "_video_attn_handler"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ConsoleHandler(logging.StreamHandler):
    """A stream handler that writes through ``tqdm.write`` (see the module docstring)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # logging must not raise: report the failure as the standard handlers do
            self.handleError(record)


def setup_logging(
    log_file: str | Path | None = None, rank: int = 0, level: int = logging.INFO, append: bool = True
) -> logging.Logger:
    """Configure the ``video_attn`` logger; idempotent (handlers added by an earlier call are replaced).

    ``append=False`` starts ``log_file`` afresh (a new run) instead of appending to it (a resumed one).
    """
    root = logging.getLogger("video_attn")
    for h in list(root.handlers):
        if getattr(h, _MARK, False):
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    # Records still propagate: the root logger has no handler in the tools, and keeping propagation lets an
    # application's (or pytest's) own handlers see them.
    fmt = logging.Formatter(_FORMAT if rank == 0 else f"[rank {rank}] {_FORMAT}", datefmt="%H:%M:%S")
    stream = _ConsoleHandler(sys.stderr)
    stream.setLevel(level if rank == 0 else logging.WARNING)
    stream.setFormatter(fmt)
    setattr(stream, _MARK, True)
    root.addHandler(stream)
    if log_file is not None and rank == 0:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path, mode="a" if append else "w")
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
