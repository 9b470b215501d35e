"""Checkpoint files: atomic writes, safe loading, and RNG state capture.

Writes go to a temporary file in the destination directory, are fsync'ed, renamed over the target with
``os.replace`` (atomic on POSIX) and the directory is fsync'ed, so a crash at any moment leaves either the old
file or the new one, never a partial one.

Loading always uses ``torch.load(weights_only=True)``: a file that needs arbitrary unpickling is refused
(nothing in it is executed). Everything stored here is therefore tensors and builtins; in particular the
NumPy and Python RNG states are converted to tensors (``weights_only`` cannot load NumPy objects).
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch


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
