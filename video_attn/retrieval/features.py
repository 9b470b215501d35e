"""Feature files: the ``.npz`` written by ``tools/extract_features.py`` and read by retrieval and evaluation.

Arrays (no pickled objects; ``np.load(..., allow_pickle=False)`` reads them):

- ``features`` float32 (N, D), required;
- ``pids`` int64 (N,) and ``camids`` int64 (N,) for ReID; an action file has ``labels`` instead of
  ``pids`` (read into :attr:`FeatureSet.pids`) and no cameras;
- ``paths`` unicode (N,): the first frame image of a tracklet, or the video file;
- optional ``num_frames`` int64 (N,), ``valid`` bool (N,) (False: the item failed to decode and its feature
  is meaningless) and ``index`` int64 (N,) (dataset row).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureSet", "FeatureFileError", "load_features", "save_features"]

_LOGGER = logging.getLogger(__name__)


class FeatureFileError(ValueError):
    """A feature file is missing, unreadable or inconsistent; the message names the file and the key."""


@dataclass
class FeatureSet:
    """Features of N items with their identity / camera / source path."""

    features: np.ndarray
    pids: np.ndarray | None = None
    camids: np.ndarray | None = None
    paths: np.ndarray | None = None
    num_frames: np.ndarray | None = None
    valid: np.ndarray | None = None
    index: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features)
        if self.features.ndim != 2:
            raise FeatureFileError(f"features must be (N, D), got shape {self.features.shape}")
        if not np.issubdtype(self.features.dtype, np.floating):
            raise FeatureFileError(f"features must be floating point, got {self.features.dtype}")
        n = len(self.features)
        for name in ("pids", "camids", "num_frames", "index"):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value)
            if value.shape != (n,) or not np.issubdtype(value.dtype, np.integer):
                raise FeatureFileError(f"{name} must be {n} integers, got {value.dtype} {value.shape}")
            setattr(self, name, value.astype(np.int64))
        if self.paths is not None:
            self.paths = np.asarray(self.paths)
            if self.paths.shape != (n,) or self.paths.dtype.kind != "U":
                raise FeatureFileError(
                    f"paths must be {n} unicode strings, got {self.paths.dtype} {self.paths.shape}"
                )
        if self.valid is not None:
            self.valid = np.asarray(self.valid)
            if self.valid.shape != (n,) or self.valid.dtype != np.bool_:
                raise FeatureFileError(
                    f"valid must be {n} booleans, got {self.valid.dtype} {self.valid.shape}"
                )

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def subset(self, rows: np.ndarray) -> FeatureSet:
        """The items at ``rows`` (integer indices or a boolean mask)."""

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return FeatureSet(
            self.features[rows],
            take(self.pids),
            take(self.camids),
            take(self.paths),
            take(self.num_frames),
            take(self.valid),
            take(self.index),
        )

    def only_valid(self, name: str = "features") -> FeatureSet:
        """Drop items marked ``valid=False`` (failed to decode), logging how many."""
        if self.valid is None or bool(self.valid.all()):
            return self
        _LOGGER.warning(
            "%s: %d of %d items failed to decode and are left out", name, (~self.valid).sum(), len(self)
        )
        return self.subset(self.valid)


def load_features(path: str | os.PathLike) -> FeatureSet:
    """Read a feature ``.npz``; raises :class:`FeatureFileError` naming the file and the bad key."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FeatureFileError(f"{path}: no such feature file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise FeatureFileError(f"{path}: not a readable .npz feature file ({err})") from err
    if "features" not in arrays:
        present = ", ".join(sorted(arrays)) or "none"
        raise FeatureFileError(f"{path}: missing array 'features' (has: {present})")
    pids = arrays.get("pids", arrays.get("labels"))
    try:
        return FeatureSet(
            features=arrays["features"].astype(np.float32, copy=False),
            pids=pids,
            camids=arrays.get("camids"),
            paths=arrays.get("paths"),
            num_frames=arrays.get("num_frames"),
            valid=arrays.get("valid"),
            index=arrays.get("index"),
        )
    except FeatureFileError as err:
        raise FeatureFileError(f"{path}: {err}") from None


def save_features(path: str | os.PathLike, feature_set: FeatureSet) -> None:
    """Write ``feature_set`` as ``.npz`` (atomically: a temporary file renamed into place)."""
    path = os.fspath(path)
    arrays = {"features": feature_set.features.astype(np.float32, copy=False)}
    for name in ("pids", "camids", "paths", "num_frames", "valid", "index"):
        value = getattr(feature_set, name)
        if value is not None:
            arrays[name] = value
    tmp = f"{path}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
