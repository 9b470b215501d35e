"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding",
CVPR 2017), with the defaults and conventions of the authors' released code: k1=20, k2=6, lambda=0.3.

Over all N = Q + G items (queries and gallery together), with d the input distance:

1. d <- d^2, then every row divided by its maximum (the released code squares the given distances, and
   its column normalisation of the symmetric matrix is this row normalisation).
2. N(i, k): the k + 1 nearest items of i (i itself included); R(i, k) = {j in N(i, k): i in N(j, k)}.
3. R*(i) = R(i, k1) united with R(j, round(k1 / 2)) for every j in R(i, k1) whose half-size set shares
   MORE than 2/3 of its items with R(i, k1) (eq. 4-5 of the paper).
4. V[i, j] = exp(-d[i, j]) / sum over R*(i) for j in R*(i), else 0 (Gaussian weighting, rows sum to 1).
5. Local query expansion (k2 > 1): V[i] <- mean of V[j] over the k2 nearest j of i (i included).
6. Jaccard distance d_J[i, j] = 1 - sum_k min(V[i,k], V[j,k]) / sum_k max(V[i,k], V[j,k])
   = 1 - m / (2 - m) with m = sum_k min (rows sum to 1).
7. d* = (1 - lambda) d_J + lambda d, for query rows and gallery columns -> (Q, G).

Memory: the released code holds several dense (Q+G)^2 float matrices (about 2.4 GB for MARS, 105 GB
for MSMT17). Here the distance rows are streamed in chunks (from the given blocks or recomputed from
features), neighbour lists are N x (k1 + 1) and V is sparse (at most N (k1+1)(k1/2+2) entries before query
expansion); what stays is the (Q, G) output plus a (Q, G) normalised distance copy. The need is estimated
first and the call refused with :class:`RerankMemoryError` when it exceeds the limit (default: 80% of
the available RAM). Neighbour lists come from ``torch.topk``: items at exactly equal distance may be
ordered differently from ``np.argsort`` (whose quicksort order is unspecified as well).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .reid import GalleryDistance

__all__ = ["re_ranking", "re_ranking_features", "estimate_rerank_memory", "RerankMemoryError"]

_LOGGER = logging.getLogger(__name__)

_ROW_BLOCK_ELEMENTS = 1 << 23  # distance rows streamed at once (x N)
_PAIR_BLOCK = 1 << 23  # (query, k, j) triples expanded at once for the Jaccard sums
# Feature rows gathered at once for the pair distances of re_ranking_features: each of the two gathered
# (pairs, D) operands and their product stays under this (a fixed pair count was 3.5 GB each at 2,048-d).
_PAIR_FEATURE_BYTES = 32 << 20


class RerankMemoryError(MemoryError):
    """Re-ranking would need more memory than allowed; the message gives the estimate."""


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30  # no /proc (not Linux): assume a modest machine


def estimate_rerank_memory(num_query: int, num_gallery: int, k1: int = 20, k2: int = 6) -> int:
    """Upper estimate (bytes) of the working memory of :func:`re_ranking` / :func:`re_ranking_features`,
    inputs not included."""
    n = num_query + num_gallery
    half = int(round(k1 / 2))
    rows = min(n, max(1, _ROW_BLOCK_ELEMENTS // n))
    v_entries = n * (k1 + 1) * (half + 2)  # bound on the k-reciprocal expansion
    return int(
        8 * num_query * num_gallery  # output + normalised query-gallery distances (float32)
        + 3 * 4 * rows * n  # one block of streamed distance rows and its temporaries
        + 3 * 8 * n * (k1 + 1)  # neighbour lists
        + 24 * v_entries * (1 + max(k2, 1))  # sparse V and V after query expansion (+ CSC copy)
        + 24 * _PAIR_BLOCK  # Jaccard expansion block
        + 3 * _PAIR_FEATURE_BYTES  # gathered feature rows (re_ranking_features)
    )


def _check_memory(num_query: int, num_gallery: int, k1: int, k2: int, max_memory_bytes: int | None) -> None:
    need = estimate_rerank_memory(num_query, num_gallery, k1, k2)
    limit = max_memory_bytes if max_memory_bytes is not None else int(0.8 * _available_memory())
    if need > limit:
        raise RerankMemoryError(
            f"k-reciprocal re-ranking of {num_query} queries x {num_gallery} gallery items needs about "
            f"{need / 2**30:.2f} GiB, over the limit of {limit / 2**30:.2f} GiB "
            f"({'max_memory_bytes' if max_memory_bytes is not None else '80% of available RAM'}); "
            "evaluate without re-ranking or on a machine with more memory"
        )
    _LOGGER.debug("re-ranking memory estimate %.2f GiB (limit %.2f GiB)", need / 2**30, limit / 2**30)


def _reciprocal_mask(ranks: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """mask[i, a] = i is among the neighbours of its own neighbour ranks[i, a] (both lists of width k)."""
    n = ranks.shape[0]
    mask = torch.empty_like(ranks, dtype=torch.bool)
    for s in range(0, n, chunk):
        own = torch.arange(s, min(n, s + chunk)).view(-1, 1, 1)
        mask[s : s + chunk] = (ranks[ranks[s : s + chunk]] == own).any(-1)
    return mask


def _expanded_sets(initial_rank: torch.Tensor, k1: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of every pair j in R*(i) (step 3), unique, rows ascending."""
    n = initial_rank.shape[0]
    half = int(round(k1 / 2))
    full = initial_rank[:, : k1 + 1]
    small = initial_rank[:, : half + 1]
    full_mask = _reciprocal_mask(full)
    small_mask = _reciprocal_mask(small)
    out_rows, out_cols = [], []
    for s in range(0, n, chunk):
        rows = torch.arange(s, min(n, s + chunk))
        base, base_mask = full[rows], full_mask[rows]  # R(i, k1): (c, k1+1)
        cand = small[base]  # R(j, k1/2) candidates of each j in N(i, k1): (c, k1+1, half+1)
        cand_mask = small_mask[base] & base_mask.unsqueeze(-1)
        in_base = (
            (cand.unsqueeze(-1) == base.view(-1, 1, 1, k1 + 1)) & base_mask.view(-1, 1, 1, k1 + 1)
        ).any(-1)
        overlap = (in_base & cand_mask).sum(-1)
        accept = overlap > (2.0 / 3.0) * cand_mask.sum(-1)
        take = cand_mask & accept.unsqueeze(-1)
        r = torch.cat(
            [rows.view(-1, 1).expand_as(base)[base_mask], rows.view(-1, 1, 1).expand_as(cand)[take]]
        )
        c = torch.cat([base[base_mask], cand[take]])
        key = torch.unique(r * n + c)
        out_rows.append(key // n)
        out_cols.append(key % n)
    return torch.cat(out_rows).numpy(), torch.cat(out_cols).numpy()


def _k_reciprocal(
    row_source: Callable[[int, int], torch.Tensor],
    pair_source: Callable[[np.ndarray, np.ndarray], torch.Tensor],
    num_query: int,
    num_gallery: int,
    k1: int,
    k2: int,
    lambda_value: float,
    neighbours: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> np.ndarray:
    """``neighbours``: precomputed (initial_rank (N, k1+1), row maxima of d^2 (N,)); then only the query
    rows are streamed (for the (Q, G) block), the gallery rows' lists and maxima are taken as given."""
    n = num_query + num_gallery
    if not 1 <= k1 < n:
        raise ValueError(f"k1 must be in [1, {n - 1}] (query + gallery - 1), got {k1}")
    if not 1 <= k2 <= k1 + 1:
        raise ValueError(f"k2 must be in [1, k1 + 1 = {k1 + 1}], got {k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")

    # Pass over the distance rows: neighbour lists, row maxima, normalised query-gallery block.
    if neighbours is None:
        initial_rank = torch.empty(n, k1 + 1, dtype=torch.int64)
        row_max = torch.empty(n, dtype=torch.float64)
    else:
        initial_rank, row_max = neighbours[0].clone(), neighbours[1].clone().double()
    query_dist = np.empty((num_query, num_gallery), dtype=np.float32)
    step = max(1, _ROW_BLOCK_ELEMENTS // n)
    for s in range(0, n if neighbours is None else num_query, step):
        e = min(n if neighbours is None else num_query, s + step)
        d2 = row_source(s, e).float().pow_(2)
        if not bool(torch.isfinite(d2).all()):
            raise ValueError(f"distances of rows {s}..{e - 1} contain NaN or inf")
        peak = d2.max(1).values
        row_max[s:e] = peak
        d2.div_(peak.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(1))
        initial_rank[s:e] = torch.topk(d2, k1 + 1, dim=1, largest=False, sorted=True).indices
        if s < num_query:
            query_dist[s : min(e, num_query)] = d2[: min(e, num_query) - s, num_query:].numpy()
        del d2

    # k-reciprocal sets with expansion, Gaussian weights (float32 like the released code), query expansion.
    rows, cols = _expanded_sets(initial_rank, k1)
    d2 = pair_source(rows, cols).float().pow_(2) / row_max[torch.from_numpy(rows)].float()
    weights = torch.exp(-d2).double().numpy()
    v = sp.csr_matrix((weights, (rows, cols)), shape=(n, n))
    row_sum = np.asarray(v.sum(1)).ravel()
    v = sp.csr_matrix(v.multiply(1.0 / np.where(row_sum > 0, row_sum, 1.0)[:, None]))
    if k2 > 1:
        qe_rows = np.repeat(np.arange(n), k2)
        qe_cols = initial_rank[:, :k2].reshape(-1).numpy()
        expand = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (qe_rows, qe_cols)), shape=(n, n))
        v = sp.csr_matrix(expand @ v)
    return _jaccard_blend(v, query_dist, num_query, lambda_value)


def _jaccard_blend(
    v: sp.csr_matrix, query_dist: np.ndarray, num_query: int, lambda_value: float
) -> np.ndarray:
    """(1 - lambda) d_J + lambda d for query rows x gallery columns; d_J over the shared support of V only."""
    num_gallery = v.shape[0] - num_query
    gallery_v = sp.csc_matrix(v[num_query:])  # column k lists the gallery items j with V[j, k] > 0
    query_v = v[:num_query].tocoo()  # row-sorted (query, k, V[query, k]) triples
    q_idx, k_idx, a_val = query_v.row, query_v.col, query_v.data
    lens = np.diff(gallery_v.indptr)[k_idx]  # gallery items sharing each (query, k)
    per_query = np.bincount(q_idx, weights=lens, minlength=num_query)
    final = np.empty((num_query, num_gallery), dtype=np.float32)
    q_start = 0
    while q_start < num_query:
        # as many queries as fit in one expansion block, at least one
        budget = np.cumsum(per_query[q_start:])
        q_end = q_start + max(1, int(np.searchsorted(budget, _PAIR_BLOCK, side="right")))
        lo, hi = np.searchsorted(q_idx, [q_start, q_end])
        seg = lens[lo:hi]
        rep = np.repeat(np.arange(lo, hi), seg)
        offsets = np.arange(int(seg.sum())) - np.repeat(np.cumsum(seg) - seg, seg)
        pos = gallery_v.indptr[k_idx[rep]] + offsets
        contrib = np.minimum(a_val[rep], gallery_v.data[pos])
        flat = (q_idx[rep] - q_start) * num_gallery + gallery_v.indices[pos]
        m = np.bincount(flat, weights=contrib, minlength=(q_end - q_start) * num_gallery)
        jaccard = 1.0 - m / (2.0 - m)
        blended = (1.0 - lambda_value) * jaccard.reshape(q_end - q_start, num_gallery)
        final[q_start:q_end] = blended + lambda_value * query_dist[q_start:q_end]
        q_start = q_end
    return final


def re_ranking(
    q_g_dist: np.ndarray | torch.Tensor,
    q_q_dist: np.ndarray | torch.Tensor,
    g_g_dist: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_memory_bytes: int | None = None,
) -> np.ndarray:
    """Re-ranked (Q, G) float32 distances from the query-gallery (Q, G), query-query (Q, Q) and
    gallery-gallery (G, G) distance matrices (the interface of the released code; it squares them).

    Raises :class:`RerankMemoryError` (with the estimate) when the work would exceed ``max_memory_bytes``
    (default 80% of the available RAM).
    """
    q_g = torch.as_tensor(q_g_dist)
    q_q = torch.as_tensor(q_q_dist)
    g_g = torch.as_tensor(g_g_dist)
    num_q, num_g = q_g.shape
    if q_q.shape != (num_q, num_q) or g_g.shape != (num_g, num_g):
        raise ValueError(
            f"shapes do not fit: q_g {tuple(q_g.shape)}, q_q {tuple(q_q.shape)}, g_g {tuple(g_g.shape)}"
        )
    _check_memory(num_q, num_g, k1, k2, max_memory_bytes)

    def rows(s: int, e: int) -> torch.Tensor:
        parts = []
        if s < num_q:  # query rows: [q_q | q_g]
            hi = min(e, num_q)
            parts.append(torch.cat([q_q[s:hi], q_g[s:hi]], 1).float())
        if e > num_q:  # gallery rows: [q_g^T | g_g]
            lo = max(s, num_q) - num_q
            parts.append(torch.cat([q_g[:, lo : e - num_q].t(), g_g[lo : e - num_q]], 1).float())
        return torch.cat(parts, 0)

    def pairs(r: np.ndarray, c: np.ndarray) -> torch.Tensor:
        out = torch.empty(len(r), dtype=torch.float64)
        rq, cq = r < num_q, c < num_q
        for r_sel, c_sel, block, r_off, c_off in (
            (True, True, q_q, 0, 0),
            (True, False, q_g, 0, num_q),
            (False, True, q_g, num_q, 0),
            (False, False, g_g, num_q, num_q),
        ):
            sel = np.nonzero((rq == r_sel) & (cq == c_sel))[0]
            if len(sel) == 0:
                continue
            rr, cc = torch.from_numpy(r[sel] - r_off), torch.from_numpy(c[sel] - c_off)
            # the gallery-query block is q_g transposed
            out[torch.from_numpy(sel)] = (block[cc, rr] if (not r_sel and c_sel) else block[rr, cc]).double()
        return out.float()

    return _k_reciprocal(rows, pairs, num_q, num_g, k1, k2, lambda_value)


@torch.no_grad()
def re_ranking_features(
    qf: np.ndarray | torch.Tensor,
    gf: np.ndarray | torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "euclidean",
    normalize: bool = True,
    max_memory_bytes: int | None = None,
    knn: Literal["exact", "faiss"] = "exact",
) -> np.ndarray:
    """Re-ranked (Q, G) float32 distances straight from features, without any dense (Q+G)^2 matrix.

    The base distance is :func:`~video_attn.evaluation.reid.pairwise_distance` (``metric``, on
    L2-normalised features when ``normalize``), i.e. what the evaluation ranks by; the result equals
    :func:`re_ranking` on the three distance blocks.

    ``knn="faiss"`` (faiss installed; unit-norm features: ``normalize=True`` or cosine) takes the
    gallery items' k1 + 1 nearest neighbours and farthest distance (the row maximum) from a faiss
    inner-product index instead of streaming all (Q+G)^2 distances: only the Q query rows are computed
    here. Its float rounding differs from torch's, so near-equal distances may order differently.
    """
    qf_t = torch.as_tensor(qf).float()
    gf_t = torch.as_tensor(gf).float()
    if qf_t.dim() != 2 or gf_t.dim() != 2 or qf_t.shape[1] != gf_t.shape[1]:
        raise ValueError(
            f"features must be (Q, D) and (G, D), got {tuple(qf_t.shape)} and {tuple(gf_t.shape)}"
        )
    num_q, num_g = len(qf_t), len(gf_t)
    if knn not in ("exact", "faiss"):
        raise ValueError(f"unknown knn {knn!r}; valid choices: exact, faiss")
    _check_memory(num_q, num_g, k1, k2, max_memory_bytes)
    feats = torch.cat([qf_t, gf_t])
    distance = GalleryDistance(feats, metric, normalize)
    unit = normalize or metric == "cosine"
    if unit:
        feats = F.normalize(feats, dim=1)
    neighbours = None
    if knn == "faiss":
        if not unit:
            raise ValueError("knn='faiss' needs unit-norm features: normalize=True or metric='cosine'")
        neighbours = _faiss_neighbours(feats.numpy(), k1, metric)
    piece = max(1, _PAIR_FEATURE_BYTES // (4 * feats.shape[1]))

    def pairs(r: np.ndarray, c: np.ndarray) -> torch.Tensor:
        # the same quantity as `distance` (unit rows: |a|^2 = |b|^2 = 1), one pair at a time
        out = torch.empty(len(r), dtype=torch.float32)
        for s in range(0, len(r), piece):
            a = feats.index_select(0, torch.from_numpy(r[s : s + piece]))
            b = feats.index_select(0, torch.from_numpy(c[s : s + piece]))
            dot = (a * b).sum(1)
            if metric == "cosine":
                out[s : s + piece] = 1.0 - dot
            elif unit:
                out[s : s + piece] = 2.0 - 2.0 * dot
            else:
                out[s : s + piece] = a.pow(2).sum(1) + b.pow(2).sum(1) - 2.0 * dot
        return out

    return _k_reciprocal(
        lambda s, e: distance(feats[s:e]), pairs, num_q, num_g, k1, k2, lambda_value, neighbours
    )


def _faiss_neighbours(unit_feats: np.ndarray, k1: int, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """k1 + 1 nearest items and the row maximum of d^2 of every unit-norm row, from one faiss IP index.
    On unit vectors nearest = most similar, and the farthest item is the top hit of the negated row."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError("knn='faiss' needs the faiss-cpu package: pip install faiss-cpu") from err
    feats = np.ascontiguousarray(unit_feats, dtype=np.float32)
    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats)
    _, nearest = index.search(feats, k1 + 1)
    far_sim, _ = index.search(-feats, 1)  # max of -cos = -(min cos)
    min_cos = -far_sim[:, 0].astype(np.float64)
    max_dist = 2.0 - 2.0 * min_cos if metric == "euclidean" else 1.0 - min_cos
    return torch.from_numpy(nearest.astype(np.int64)), torch.from_numpy(max_dist**2)
