"""Checkpoint files: atomic writes, safe loading, RNG state capture, and the training checkpoint.

Writes go to a temporary file in the destination directory, are fsync'ed, renamed over the target with
``os.replace`` (atomic on POSIX) and the directory is fsync'ed, so a crash at any moment leaves either the old
file or the new one, never a partial one.

Loading always uses ``torch.load(weights_only=True)``: a file that needs arbitrary unpickling is refused
(nothing in it is executed). Everything stored here is therefore tensors and builtins; in particular the
NumPy and Python RNG states are converted to tensors (``weights_only`` cannot load NumPy objects).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import torch
from torch import nn

from . import distributed as du

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe or of the wrong layout."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode() -> int:
    # mkstemp creates 0600 files; give the final file the mode a plain open() would (0666 minus umask)
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(f)`` on a temp file in ``path``'s directory, fsync it and ``os.replace`` it over ``path``.

    On any failure (including Ctrl-C) the temp file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, _file_mode())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file in the same dir + fsync + os.replace)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON with sorted keys, written atomically (NumPy scalars and arrays allowed)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with ``torch.load(weights_only=True)``; refuse anything that needs full unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"refusing to load {path}: it needs arbitrary unpickling, which weights_only=True forbids "
            f"({first}). Only load files you trust; re-save them as plain tensors/builtins."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def model_state_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The model state_dict of a checkpoint: ``ckpt["model"]``, ``ckpt["state_dict"]`` or a bare state_dict.

    A DataParallel/DDP ``module.`` prefix is stripped.
    """
    state = ckpt.get("model", ckpt.get("state_dict", ckpt))
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise CheckpointError(f"{path}: no model state_dict found (expected key 'model' holding tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


# ------------------------------------------------------------------------------------------ RNG state
def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) global RNG states as tensors and builtins (weights_only-safe)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ------------------------------------------------------------------------------------ training checkpoint
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainingCheckpointer:
    """Writes and restores ``<directory>/<name>``: everything a run needs to continue exactly.

    Keys: ``model`` (the unwrapped model), ``optimizer``, ``scheduler``, ``scaler`` (fp16 AMP, else None),
    ``extra`` (other trained modules by name, e.g. centre-loss centres), the loop's progress (``epoch``,
    ``inner_iter``, ``iteration``, ``batches_per_epoch``, ``world_size``, ``sampler``, ``hooks``: hook states
    by hook name), ``rng`` (the global RNG states of every rank), ``config`` (the resolved config dict) and
    ``class_names`` (the names of the model's classes, a list of str, or None).

    Args:
        directory: where the files go (rank 0 writes; every rank calls :meth:`save`: it gathers RNG states).
        loop: the training loop (``state_dict`` / ``load_state_dict`` of its progress and hooks).
        model, optimizer, scheduler: saved and restored as they are.
        scaler: the loop's ``torch.amp.GradScaler``; saved only when enabled.
        extra_modules: other modules with trained state.
        config: stored as is in every file.
        class_names: stored as is in every file (what inference names the model's outputs by).
    """

    def __init__(
        self,
        directory: str | Path,
        loop: Stateful,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Stateful,
        scaler: torch.amp.GradScaler,
        extra_modules: dict[str, nn.Module] | None = None,
        config: dict | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.loop = loop
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.extra_modules = dict(extra_modules or {})
        self.config = config
        self.class_names = class_names

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's contents; a collective call (RNG states of every rank are gathered)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "extra": {name: m.state_dict() for name, m in self.extra_modules.items()},
            **self.loop.state_dict(),
            "rng": du.all_gather_object(capture_rng_state()),
            "config": self.config,
            "class_names": self.class_names,
        }

    def save(self, name: str) -> Path:
        """Write ``<directory>/<name>`` atomically on rank 0; every rank calls it and gets the path."""
        state = self.state_dict()
        path = self.directory / name
        if du.is_main_process():
            atomic_save(state, path)
            logger.debug("wrote %s (epoch %d, iteration %d)", path, state["epoch"] + 1, state["iteration"])
        du.barrier()
        return path

    def load(self, ckpt: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the loop's next ``train()`` continues after the saved step."""
        self.loop.load_state_dict(ckpt)  # first: it refuses a checkpoint of another data layout
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        extra = ckpt.get("extra") or {}
        for name, module in self.extra_modules.items():
            if name in extra:
                module.load_state_dict(extra[name])
        rng, world_size = ckpt.get("rng") or [], du.get_world_size()
        if len(rng) == world_size:
            restore_rng_state(rng[du.get_rank()])
        else:
            logger.warning(
                "checkpoint has RNG states of %d rank(s), this run has %d: RNG not restored",
                len(rng),
                world_size,
            )
