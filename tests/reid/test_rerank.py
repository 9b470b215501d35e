"""k-reciprocal re-ranking against a plain dense implementation of the paper's steps."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from video_attn.evaluation.reid import evaluate_rank, pairwise_distance
from video_attn.evaluation.rerank import (
    RerankMemoryError,
    estimate_rerank_memory,
    re_ranking,
    re_ranking_features,
)


def reference_rerank(q_g, q_q, g_g, k1, k2, lam):
    """Zhong et al. CVPR'17 step by step on dense matrices (released-code conventions: squared distances,
    rows scaled by their maximum, neighbour lists include the item itself, Jaccard over all items)."""
    num_q, num_g = q_g.shape
    n = num_q + num_g
    d = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64) ** 2
    d = d / d.max(axis=1, keepdims=True)
    rank = np.argsort(d, axis=1, kind="stable")

    def reciprocal(i, k):
        return [j for j in rank[i, : k + 1] if i in rank[j, : k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = set(r)
        for j in r:
            r_half = reciprocal(j, int(round(k1 / 2)))
            if len(set(r_half) & set(r)) > 2 / 3 * len(r_half):
                expanded |= set(r_half)
        idx = np.array(sorted(expanded))
        w = np.exp(-d[i, idx])
        v[i, idx] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jaccard = np.zeros((num_q, num_g))
    for i in range(num_q):
        for j in range(num_g):
            jaccard[i, j] = 1 - np.minimum(v[i], v[num_q + j]).sum() / np.maximum(v[i], v[num_q + j]).sum()
    return (1 - lam) * jaccard + lam * d[:num_q, num_q:]


def identity_features(rng, num_q, num_g, dim=16, num_ids=8):
    centers = rng.standard_normal((num_ids, dim))
    q_ids, g_ids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    qf = centers[q_ids] + 0.7 * rng.standard_normal((num_q, dim))
    gf = centers[g_ids] + 0.7 * rng.standard_normal((num_g, dim))
    return torch.tensor(qf, dtype=torch.float32), torch.tensor(gf, dtype=torch.float32), q_ids, g_ids


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (6, 3, 0.5), (5, 1, 0.0)])
def test_re_ranking_equals_reference(k1, k2, lam):
    rng = np.random.default_rng(k1)
    qf, gf, _, _ = identity_features(rng, 12, 60)
    full = pairwise_distance(torch.cat([qf, gf]), torch.cat([qf, gf])).double()
    full = ((full + full.t()) / 2).numpy()  # exactly symmetric, as distances are
    q_g, q_q, g_g = full[:12, 12:], full[:12, :12], full[12:, 12:]
    expected = reference_rerank(q_g, q_q, g_g, k1, k2, lam)
    got = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lam)
    assert got.shape == (12, 60) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_features_path_equals_block_path():
    rng = np.random.default_rng(1)
    qf, gf, q_ids, g_ids = identity_features(rng, 20, 90)
    blocks = tuple(pairwise_distance(a, b, normalize=True) for a, b in ((qf, gf), (qf, qf), (gf, gf)))
    expected = re_ranking(*blocks)
    got = re_ranking_features(qf, gf)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # re-ranking helps on identity-structured data (its purpose), with distinct cameras everywhere
    q_cams, g_cams = np.zeros(20, np.int64), np.ones(90, np.int64)
    before = evaluate_rank(blocks[0], q_ids, g_ids, q_cams, g_cams)
    after = evaluate_rank(got, q_ids, g_ids, q_cams, g_cams)
    assert after["mAP"] > before["mAP"]


def test_memory_estimate_and_refusal():
    mars = estimate_rerank_memory(1980, 12180)
    assert 0.2 * 2**30 < mars < 2 * 2**30
    assert estimate_rerank_memory(11659, 82161) > 7 * 2**30  # MSMT17: the (Q, G) outputs alone are 7.1 GiB
    qf, gf = torch.randn(4, 8), torch.randn(30, 8)
    with pytest.raises(RerankMemoryError, match=r"needs about 0\.\d+ GiB, over the limit of 0\.00 GiB"):
        re_ranking_features(qf, gf, k1=5, max_memory_bytes=1000)
    assert re_ranking_features(qf, gf, k1=5, k2=2).shape == (4, 30)


def test_bad_arguments():
    qf, gf = torch.randn(3, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match="k1 must be in"):
        re_ranking_features(qf, gf, k1=20)
    with pytest.raises(ValueError, match="k2 must be in"):
        re_ranking_features(qf, gf, k1=4, k2=9)
    with pytest.raises(ValueError, match="shapes do not fit"):
        re_ranking(np.zeros((3, 10)), np.zeros((3, 3)), np.zeros((9, 9)))
    bad = np.zeros((3, 10))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        re_ranking(bad, np.zeros((3, 3)), np.zeros((10, 10)), k1=4, k2=2)


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss-cpu not installed (optional)")
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_faiss_neighbours_match_exact(metric):
    rng = np.random.default_rng(5)
    qf, gf, _, _ = identity_features(rng, 15, 80)
    exact = re_ranking_features(qf, gf, k1=8, k2=3, metric=metric)
    approx = re_ranking_features(qf, gf, k1=8, k2=3, metric=metric, knn="faiss")
    np.testing.assert_allclose(approx, exact, atol=1e-4)
    with pytest.raises(ValueError, match="unit-norm"):
        re_ranking_features(qf, gf, k1=8, normalize=False, knn="faiss")


def test_features_path_pair_pieces_do_not_change_the_result(monkeypatch):
    # pair distances are gathered in pieces bounded in bytes (not in pairs): tiny pieces, same numbers
    import video_attn.evaluation.rerank as rerank_module

    rng = np.random.default_rng(3)
    qf, gf, _, _ = identity_features(rng, 10, 40)
    expected = re_ranking_features(qf, gf, k1=6, k2=3)
    monkeypatch.setattr(rerank_module, "_PAIR_FEATURE_BYTES", 4 * qf.shape[1] * 7)  # 7 pairs a piece
    np.testing.assert_array_equal(re_ranking_features(qf, gf, k1=6, k2=3), expected)
