"""Ranked lists for query items: top-k gallery hits, each marked good / wrong / junk.

Marks follow the ReID evaluation (:mod:`video_attn.evaluation.reid`): *good* = same identity, other camera;
*junk* = same identity and same camera, and (``junk_pid_minus_one=True``, MARS) identity -1; every other
hit is *wrong*. Without camera ids (action features) every same-label hit is good and nothing is junk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import FeatureSet
from .index import RetrievalIndex

__all__ = ["GOOD", "WRONG", "JUNK", "RankedList", "match_labels", "search_ranked_lists"]

GOOD, WRONG, JUNK = 1, 0, -1


@dataclass
class RankedList:
    """Top-k result of one query: gallery rows, distances and match marks (GOOD / WRONG / JUNK)."""

    query: int
    indices: np.ndarray
    distances: np.ndarray
    labels: np.ndarray | None


def match_labels(
    q_pid: int,
    q_camid: int | None,
    g_pids: np.ndarray,
    g_camids: np.ndarray | None,
    junk_pid_minus_one: bool = True,
) -> np.ndarray:
    """int8 marks of gallery items ``g_pids`` / ``g_camids`` for one query (see module docstring)."""
    same = g_pids == q_pid
    labels = np.where(same, GOOD, WRONG).astype(np.int8)
    if q_camid is not None and g_camids is not None:
        labels[same & (g_camids == q_camid)] = JUNK
    if junk_pid_minus_one:
        labels[g_pids == -1] = JUNK
    return labels


def search_ranked_lists(
    index: RetrievalIndex,
    queries: FeatureSet,
    k: int,
    exclude_junk: bool = False,
    junk_pid_minus_one: bool = True,
) -> list[RankedList]:
    """Top-``k`` ranked list of every query item.

    With ``exclude_junk=True`` junk hits are dropped and the list is refilled to ``k`` from further down
    (the evaluation's view); otherwise they stay in place, marked JUNK. Marks are None when either side
    has no identities.
    """
    gallery = index.gallery
    has_ids = queries.pids is not None and gallery.pids is not None
    search_k = k
    if exclude_junk and has_ids:
        # enough extra hits to replace every junk item the query could meet
        extra = int((gallery.pids == -1).sum()) if junk_pid_minus_one else 0
        _, counts = np.unique(gallery.pids, return_counts=True)
        search_k = min(len(gallery), k + extra + int(counts.max()))
    distances, indices = index.search(queries.features, search_k)
    results = []
    for row in range(len(queries)):
        idx, dist = indices[row], distances[row]
        found = idx >= 0
        idx, dist = idx[found], dist[found]
        labels = None
        if has_ids:
            labels = match_labels(
                int(queries.pids[row]),
                None if queries.camids is None else int(queries.camids[row]),
                gallery.pids[idx],
                gallery.camids[idx] if gallery.camids is not None and queries.camids is not None else None,
                junk_pid_minus_one,
            )
            if exclude_junk:
                keep = labels != JUNK
                idx, dist, labels = idx[keep], dist[keep], labels[keep]
            labels = labels[:k]
        results.append(RankedList(row, idx[:k], dist[:k], labels))
    return results
