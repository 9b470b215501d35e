"""Nearest-neighbour index over a gallery of features: faiss when installed, exact torch top-k otherwise.

Distances are the ones of :func:`video_attn.evaluation.reid.pairwise_distance`: ``"euclidean"`` is the
squared Euclidean distance, ``"cosine"`` is ``1 - cos``; ``normalize=True`` L2-normalises gallery and
queries first (GLTR). Smaller is closer.

Backends (same :meth:`RetrievalIndex.search` API):

- ``"exact"``: chunked torch matrix product + top-k. Ties at equal distance are broken by the lower
  gallery index, the rule of the ReID evaluation, so the lists agree with :func:`evaluate_rank`.
- ``"faiss"``: ``IndexFlatL2`` (euclidean) or ``IndexFlatIP`` on normalised vectors (cosine), exact up to
  float rounding. For large galleries (``index_type="auto"`` and at least :data:`IVF_MIN_SIZE` items)
  an ``IndexIVFFlat``: ``nlist`` = the power of two nearest to ``4 * sqrt(N)`` (faiss' guideline is
  4-16 sqrt(N)), lowered until every list gets at least 39 training points; ``nprobe`` = nlist / 16
  (at least 8). IVF is approximate: raise ``nprobe`` for recall.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from video_attn.evaluation.reid import METRICS, GalleryDistance

from .features import FeatureSet, load_features, save_features

__all__ = ["RetrievalIndex", "faiss_available", "ivf_nlist", "IVF_MIN_SIZE"]

_LOGGER = logging.getLogger(__name__)

IVF_MIN_SIZE = 200_000  # below this a flat (exact) faiss index is fast enough
_BLOCK_ELEMENTS = 1 << 22  # distance block (queries x gallery) of the exact backend


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def ivf_nlist(num_items: int) -> int:
    """Number of IVF lists for ``num_items`` vectors (see the module docstring)."""
    nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(num_items))))
    while nlist > 1 and num_items < 39 * nlist:
        nlist //= 2
    return nlist


class RetrievalIndex:
    """Searchable gallery.

    Args:
        gallery: the gallery items (features plus the metadata returned with the results).
        metric: ``"euclidean"`` (squared) or ``"cosine"``.
        normalize: L2-normalise features before distances.
        backend: ``"auto"`` (faiss when installed, else exact), ``"faiss"`` or ``"exact"``.
        index_type: faiss only: ``"auto"``, ``"flat"`` or ``"ivf"``.
        nlist, nprobe: IVF parameters (default: the rule in the module docstring).
    """

    def __init__(
        self,
        gallery: FeatureSet,
        metric: Literal["euclidean", "cosine"] = "euclidean",
        normalize: bool = True,
        backend: Literal["auto", "faiss", "exact"] = "auto",
        index_type: Literal["auto", "flat", "ivf"] = "auto",
        nlist: int | None = None,
        nprobe: int | None = None,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid choices: {', '.join(METRICS)}")
        if backend not in ("auto", "faiss", "exact"):
            raise ValueError(f"unknown backend {backend!r}; valid choices: auto, faiss, exact")
        if index_type not in ("auto", "flat", "ivf"):
            raise ValueError(f"unknown index_type {index_type!r}; valid choices: auto, flat, ivf")
        if len(gallery) == 0:
            raise ValueError("cannot index an empty gallery")
        if backend == "auto":
            backend = "faiss" if faiss_available() else "exact"
        if backend == "faiss" and not faiss_available():
            raise ImportError("backend='faiss' needs the faiss-cpu package: pip install faiss-cpu")
        self.gallery = gallery
        self.metric = metric
        self.normalize = normalize
        self.backend = backend
        self.dim = gallery.dim
        self.index_type = "flat"
        self.nlist = 0
        self.nprobe = 0
        if backend == "faiss":
            if index_type == "auto":
                index_type = "ivf" if len(gallery) >= IVF_MIN_SIZE else "flat"
            self.index_type = index_type
            self._faiss_index = self._build_faiss(self._prepare(gallery.features), nlist, nprobe)
        else:
            raw = torch.from_numpy(self._prepare(gallery.features, normalize=False))
            self._distance = GalleryDistance(raw, metric, normalize)

    def __len__(self) -> int:
        return len(self.gallery)

    def _prepare(self, features: np.ndarray, normalize: bool = True) -> np.ndarray:
        """float32 contiguous (N, dim), finite; L2-normalised when ``normalize`` and the index wants it
        (faiss gets normalised vectors; the exact backend normalises inside GalleryDistance)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (N, {self.dim}), got {features.shape}")
        if not np.isfinite(features).all():
            bad = int(np.nonzero(~np.isfinite(features).all(1))[0][0])
            raise ValueError(f"features row {bad} contains NaN or inf")
        if normalize and (self.normalize or self.metric == "cosine"):
            features = F.normalize(torch.from_numpy(features), dim=1).numpy()
        return features

    def _build_faiss(self, features: np.ndarray, nlist: int | None, nprobe: int | None):
        import faiss

        if self.metric == "euclidean":
            flat = faiss.IndexFlatL2(self.dim)
        else:
            flat = faiss.IndexFlatIP(self.dim)
        if self.index_type == "flat":
            flat.add(features)
            return flat
        self.nlist = nlist or ivf_nlist(len(features))
        self.nprobe = nprobe or max(8, self.nlist // 16)
        faiss_metric = faiss.METRIC_L2 if self.metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexIVFFlat(flat, self.dim, self.nlist, faiss_metric)
        index.train(features)
        index.add(features)
        index.nprobe = self.nprobe
        # the coarse quantizer must live as long as the index
        self._quantizer = flat
        return index

    @torch.no_grad()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery items of each query -> (distances float32 (Q, k), indices int64 (Q, k)).

        Closest first. ``k`` larger than the gallery is clipped to the gallery size. An IVF index may
        return fewer than ``k`` hits; the missing entries are index -1 and distance inf.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = self._prepare(queries, normalize=self.backend == "faiss")
        k = min(k, len(self))
        if self.backend == "faiss":
            dist, idx = self._faiss_index.search(queries, k)
            if self.metric == "cosine":
                dist = 1.0 - dist
            dist = np.where(idx < 0, np.inf, dist).astype(np.float32)
            return dist, idx.astype(np.int64)
        return self._exact_search(torch.from_numpy(queries), k)

    def _exact_search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        num_g = len(self)
        chunk = max(1, _BLOCK_ELEMENTS // num_g)
        out_d = np.empty((len(queries), k), dtype=np.float32)
        out_i = np.empty((len(queries), k), dtype=np.int64)
        for s in range(0, len(queries), chunk):
            dist = self._distance(queries[s : s + chunk])
            kth = torch.topk(dist, k, dim=1, largest=False, sorted=True).values[:, -1:]
            # all items closer than the k-th distance, then the lowest-index items at exactly that distance
            closer = dist < kth
            tied = dist == kth
            need = k - closer.sum(1, keepdim=True)
            selected = closer | (tied & (torch.cumsum(tied, 1) <= need))
            cols = torch.nonzero(selected, as_tuple=True)[1].view(-1, k)  # ascending gallery index per row
            vals = dist.gather(1, cols)
            vals, order = torch.sort(vals, dim=1, stable=True)
            out_d[s : s + chunk] = vals.numpy()
            out_i[s : s + chunk] = cols.gather(1, order).numpy()
        return out_d, out_i

    # ------------------------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> None:
        """Write the index to ``directory`` (created): ``meta.json``, ``gallery.npz`` and, for faiss,
        ``faiss.index`` (the gallery file then keeps metadata only; the vectors live in the faiss file)."""
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        meta = {
            "format": "video_attn.retrieval/1",
            "backend": self.backend,
            "metric": self.metric,
            "normalize": self.normalize,
            "index_type": self.index_type,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "dim": self.dim,
            "size": len(self),
        }
        gallery = self.gallery
        if self.backend == "faiss":
            import faiss

            faiss.write_index(self._faiss_index, os.path.join(directory, "faiss.index"))
            gallery = gallery.subset(np.arange(len(gallery)))
            gallery.features = np.zeros((len(gallery), 0), dtype=np.float32)
        save_features(os.path.join(directory, "gallery.npz"), gallery)
        with open(os.path.join(directory, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> RetrievalIndex:
        """Read an index written by :meth:`save`."""
        directory = os.fspath(directory)
        meta_path = os.path.join(directory, "meta.json")
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{directory}: not a retrieval index (no meta.json)")
        with open(meta_path) as f:
            meta = json.load(f)
        gallery = load_features(os.path.join(directory, "gallery.npz"))
        if meta["backend"] == "exact":
            return cls(gallery, meta["metric"], meta["normalize"], backend="exact")
        if not faiss_available():
            raise ImportError(f"{directory} holds a faiss index: install faiss-cpu to load it")
        import faiss

        index = cls.__new__(cls)
        index.gallery = gallery
        index.metric = meta["metric"]
        index.normalize = meta["normalize"]
        index.backend = "faiss"
        index.dim = meta["dim"]
        index.index_type = meta["index_type"]
        index.nlist = meta["nlist"]
        index.nprobe = meta["nprobe"]
        index._faiss_index = faiss.read_index(os.path.join(directory, "faiss.index"))
        if index._faiss_index.ntotal != len(gallery):
            raise ValueError(
                f"{directory}: faiss.index holds {index._faiss_index.ntotal} vectors but gallery.npz "
                f"{len(gallery)} items"
            )
        return index
