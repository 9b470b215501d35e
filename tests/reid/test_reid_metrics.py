"""ReID ranking metrics: hand-made cases with known answers and equality with a plain per-query loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import video_attn.evaluation.reid as reid_module
from video_attn.evaluation.reid import evaluate_features, evaluate_rank, pairwise_distance


def reference_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="torchreid"):
    """Plain reading of the two protocols: full stable argsort per query, MATLAB compute_AP loop."""
    aps, inps, cmcs, skipped = [], [], [], 0
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        same_pid = g_pids[order] == q_pids[i]
        junk = same_pid & (g_camids[order] == q_camids[i])
        if protocol == "mars_official":
            junk |= g_pids[order] == -1
        good = (same_pid & (g_camids[order] != q_camids[i]))[~junk]
        cmc = np.zeros(max_rank)
        if not good.any():
            if protocol == "torchreid":
                skipped += 1
                continue
            aps.append(0.0)
            inps.append(0.0)
            cmcs.append(cmc)
            continue
        if protocol == "torchreid":
            hits = np.cumsum(good)
            ap = float(np.sum((hits / np.arange(1, len(good) + 1))[good]) / good.sum())
        else:  # the MATLAB loop: recall step times the mean of the old and new precision
            ap, old_recall, old_precision, hits = 0.0, 0.0, 1.0, 0
            for j, is_good in enumerate(good, start=1):
                hits += int(is_good)
                recall, precision = hits / good.sum(), hits / j
                ap += (recall - old_recall) * (old_precision + precision) / 2
                old_recall, old_precision = recall, precision
                if hits == good.sum():
                    break
        positions = np.nonzero(good)[0]
        aps.append(ap)
        inps.append(good.sum() / (positions[-1] + 1))
        cmc[positions[0] :] = 1
        cmcs.append(cmc)
    return {"mAP": np.mean(aps), "mINP": np.mean(inps), "cmc": np.mean(cmcs, 0), "skipped": skipped}


def assert_same(result, expected):
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert result["mINP"] == pytest.approx(expected["mINP"], abs=1e-12)
    np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-12)


def one_query(distances, g_pids, g_camids, protocol="torchreid", q_pid=1, q_cam=0, max_rank=5):
    return evaluate_rank(
        np.array([distances], dtype=np.float32),
        np.array([q_pid]),
        np.array(g_pids),
        np.array([q_cam]),
        np.array(g_camids),
        max_rank=max_rank,
        protocol=protocol,
    )


# ------------------------------------------------------------------------------------- hand-made cases
def test_two_hits_both_protocols():
    # ranked list: good, wrong, good
    dist, pids, cams = [0.1, 0.2, 0.3], [1, 2, 1], [1, 1, 2]
    r = one_query(dist, pids, cams)
    assert r["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert r["mINP"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(r["cmc"], [1, 1, 1, 1, 1])
    m = one_query(dist, pids, cams, protocol="mars_official")
    # trapezoid: hit 1 at rank 1 -> (1 + 1)/2; hit 2 at rank 3 -> (1/2 + 2/3)/2; times 1/n_good
    assert m["mAP"] == pytest.approx((1.0 + (1 / 2 + 2 / 3) / 2) / 2)
    assert m["mAP"] < r["mAP"]
    assert m["mINP"] == pytest.approx(2 / 3)


def test_first_hit_late_cmc_and_trapezoid():
    r = one_query([0.1, 0.2, 0.3], [2, 3, 1], [1, 1, 1], protocol="mars_official")
    np.testing.assert_allclose(r["cmc"], [0, 0, 1, 1, 1])
    assert r["mAP"] == pytest.approx((0 / 2 + 1 / 3) / 2)  # P_prev = 0 / (r - 1) before the first hit
    assert r["mINP"] == pytest.approx(1 / 3)


def test_same_camera_items_are_junk():
    # the same-pid same-camera item (e.g. the query itself in the gallery) is removed from the list
    r = one_query([0.0, 0.1, 0.2, 0.3], [1, 1, 2, 1], [0, 1, 1, 2])
    assert r["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert r["num_valid_queries"] == 1


def test_pid_minus_one_junk_only_in_mars_protocol():
    dist, pids, cams = [0.1, 0.15, 0.2, 0.3], [1, -1, 2, 1], [1, 1, 1, 2]
    r = one_query(dist, pids, cams)
    assert r["mAP"] == pytest.approx((1 / 1 + 2 / 4) / 2)  # -1 is an ordinary wrong match
    m = one_query(dist, pids, cams, protocol="mars_official")
    assert m["mAP"] == pytest.approx((1.0 + (1 / 2 + 2 / 3) / 2) / 2)  # -1 removed like junk


def test_distractors_pid_zero_are_ordinary_negatives():
    for protocol in ("torchreid", "mars_official"):
        r = one_query([0.1, 0.2, 0.3], [0, 0, 1], [1, 2, 1], protocol=protocol)
        np.testing.assert_allclose(r["cmc"], [0, 0, 1, 1, 1])
        assert r["mINP"] == pytest.approx(1 / 3)


def test_ties_broken_by_gallery_index():
    wrong_first = one_query([0.5, 0.5], [2, 1], [1, 1])
    good_first = one_query([0.5, 0.5], [1, 2], [1, 1])
    assert wrong_first["mAP"] == pytest.approx(0.5)
    assert good_first["mAP"] == pytest.approx(1.0)
    # -0.0 and +0.0 are the same distance
    assert one_query([-0.0, 0.0], [2, 1], [1, 1])["mAP"] == pytest.approx(0.5)


def test_query_without_match_skipped_or_counted():
    distmat = np.array([[0.1, 0.2], [0.1, 0.2]], dtype=np.float32)
    g_pids, g_cams = np.array([1, 3]), np.array([1, 1])
    q_pids, q_cams = np.array([1, 2]), np.array([0, 0])
    r = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=2)
    assert (r["num_valid_queries"], r["num_skipped_queries"]) == (1, 1)
    assert r["mAP"] == pytest.approx(1.0)
    m = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=2, protocol="mars_official")
    assert (m["num_valid_queries"], m["num_skipped_queries"], m["num_queries_without_match"]) == (2, 0, 1)
    assert m["mAP"] == pytest.approx(0.5)
    assert m["mINP"] == pytest.approx(0.5)
    np.testing.assert_allclose(m["cmc"], [0.5, 0.5])


def test_cmc_has_max_rank_entries_for_a_small_gallery():
    r = one_query([0.3, 0.1], [1, 2], [1, 1], max_rank=10)
    assert r["cmc"].shape == (10,)
    np.testing.assert_allclose(r["cmc"], [0] + [1] * 9)


# ----------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    d = np.zeros((2, 3), dtype=np.float32)
    pids, cams = np.array([1, 2]), np.array([0, 0])
    gp, gc = np.array([1, 2, 1]), np.array([1, 1, 1])
    bad = d.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="distmat row 1"):
        evaluate_rank(bad, pids, gp, cams, gc, chunk_size=1)
    with pytest.raises(ValueError, match="g_pids must be 1-D with 3"):
        evaluate_rank(d, pids, gp[:2], cams, gc)
    with pytest.raises(ValueError, match="valid choices"):
        evaluate_rank(d, pids, gp, cams, gc, protocol="market")
    with pytest.raises(ValueError, match="no.*good match|none of the 2 queries"):
        evaluate_rank(d, np.array([7, 8]), gp, cams, gc)
    with pytest.raises(ValueError, match="pid -1"):
        evaluate_rank(d, np.array([-1, 2]), gp, cams, gc, protocol="mars_official")
    feats = torch.ones(2, 4)
    feats[0, 1] = float("inf")
    with pytest.raises(ValueError, match="qf row 0"):
        evaluate_features(feats, torch.ones(3, 4), pids, gp, cams, gc)


# -------------------------------------------------------------------------- equality with the reference
def random_identity_problem(rng, num_q, num_g, dim, num_ids=12, quantized=False):
    g_pids = rng.integers(-1, num_ids, num_g)
    g_cams = rng.integers(0, 3, num_g)
    q_pids = rng.integers(1, num_ids, num_q)
    q_cams = rng.integers(0, 3, num_q)
    if quantized:  # small integers: exact float arithmetic, so many exactly equal distances
        centers = rng.integers(-1, 2, (num_ids + 1, dim))
        qf = centers[q_pids + 1] + rng.integers(-1, 2, (num_q, dim))
        gf = centers[g_pids + 1] + rng.integers(-1, 2, (num_g, dim))
    else:
        centers = rng.standard_normal((num_ids + 1, dim))
        qf = centers[q_pids + 1] + rng.standard_normal((num_q, dim))
        gf = centers[g_pids + 1] + rng.standard_normal((num_g, dim))
    return (
        torch.tensor(qf, dtype=torch.float32),
        torch.tensor(gf, dtype=torch.float32),
        q_pids,
        g_pids,
        q_cams,
        g_cams,
    )


@pytest.mark.parametrize("protocol", ["torchreid", "mars_official"])
@pytest.mark.parametrize("quantized", [False, True])
def test_equals_reference_on_random_data(protocol, quantized):
    rng = np.random.default_rng(7 + quantized)
    for trial in range(4):
        qf, gf, qp, gp, qc, gc = random_identity_problem(rng, 25, 150, 6, quantized=quantized)
        distmat = pairwise_distance(qf, gf).numpy()
        if trial % 3 == 2:
            distmat = -distmat  # negative values must order correctly too
        expected = reference_rank(distmat, qp, gp, qc, gc, max_rank=20, protocol=protocol)
        chunk = int(rng.integers(1, 30))
        for dm in (distmat, distmat.astype(np.float64), torch.from_numpy(distmat).half()):
            if dm.dtype == torch.float16:
                expected16 = reference_rank(dm.float().numpy(), qp, gp, qc, gc, 20, protocol)
                assert_same(evaluate_rank(dm, qp, gp, qc, gc, 20, protocol, chunk_size=chunk), expected16)
                continue
            assert_same(evaluate_rank(dm, qp, gp, qc, gc, 20, protocol, chunk_size=chunk), expected)
        if trial % 3 != 2:
            from_features = evaluate_features(
                qf, gf, qp, gp, qc, gc, normalize=False, protocol=protocol, max_rank=20, chunk_size=chunk
            )
            assert_same(from_features, expected)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_features_equal_rank_on_distances(metric):
    rng = np.random.default_rng(3)
    qf, gf, qp, gp, qc, gc = random_identity_problem(rng, 40, 300, 16)
    distmat = pairwise_distance(qf, gf, metric, normalize=True)
    for protocol in ("torchreid", "mars_official"):
        expected = reference_rank(distmat.numpy(), qp, gp, qc, gc, protocol=protocol)
        got = evaluate_features(qf, gf, qp, gp, qc, gc, metric=metric, protocol=protocol, chunk_size=7)
        assert_same(got, expected)
        assert_same(evaluate_rank(distmat, qp, gp, qc, gc, protocol=protocol), expected)


def test_pairwise_distance_values():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    g = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(pairwise_distance(q, g, "euclidean"), [[0, 20], [5, 13]], atol=1e-6)
    np.testing.assert_allclose(pairwise_distance(q, g, "cosine"), [[0, 0.4], [1, 0.2]], atol=1e-6)


def test_trapezoid_never_higher_and_hits_only_matter():
    rng = np.random.default_rng(11)
    qf, gf, qp, gp, qc, gc = random_identity_problem(rng, 60, 400, 8)
    r = evaluate_features(qf, gf, qp, gp, qc, gc)
    m = evaluate_features(qf, gf, qp, gp, qc, gc, protocol="mars_official")
    assert 0 < m["mAP"] <= r["mAP"] <= 1
    assert np.all(np.diff(r["cmc"]) >= 0) and r["cmc"][-1] <= 1


# ------------------------------------------------------------------------------ real MARS query layout
def test_mars_query_counts_under_both_protocols(reid_helpers):
    from scipy.io import loadmat

    mars_info = reid_helpers.mars_info
    assert (mars_info / "tracks_test_info.mat").is_file(), f"real MARS metadata not found at {mars_info}"
    info = loadmat(mars_info / "tracks_test_info.mat")["track_test_info"].astype(np.int64)
    query_idx = loadmat(mars_info / "query_IDX.mat")["query_IDX"].ravel() - 1
    pids, cams = info[:, 2], info[:, 3]
    rng = np.random.default_rng(0)
    # identity-structured 16-d features: few items between a query and its last good match (fast)
    centers = rng.standard_normal((pids.max() + 2, 16)).astype(np.float32)
    noise = rng.standard_normal((len(pids), 16)).astype(np.float32)
    feats = torch.from_numpy(centers[pids + 1] + 0.3 * noise)
    qf = feats[query_idx]
    official = evaluate_features(
        qf, feats, pids[query_idx], pids, cams[query_idx], cams, protocol="mars_official"
    )
    assert (official["num_valid_queries"], official["num_queries_without_match"]) == (1980, 0)
    keep = np.ones(len(pids), dtype=bool)
    keep[query_idx] = False
    keep &= pids != -1
    assert keep.sum() == 9330
    torchreid = evaluate_features(qf, feats[keep], pids[query_idx], pids[keep], cams[query_idx], cams[keep])
    assert (torchreid["num_valid_queries"], torchreid["num_skipped_queries"]) == (1840, 140)


# ------------------------------------------------------------- both ranking paths, blocks, devices, inputs
@pytest.mark.parametrize("protocol", ["torchreid", "mars_official"])
@pytest.mark.parametrize(
    "binned_fraction, bins",
    [(0.0, 1), (0.0, 3), (0.0, 1024), (2.0, 1024)],
    ids=["1bin", "3bins", "binned", "listed"],
)
def test_both_ranking_paths_equal_reference(protocol, binned_fraction, bins, monkeypatch):
    # _BINNED_FRACTION 0: every block is binned (with few bins: most items share a bin with a good item
    # and take the exact keys); 2: every block lists its candidates
    monkeypatch.setattr(reid_module, "_BINNED_FRACTION", binned_fraction)
    monkeypatch.setattr(reid_module, "_BINS", bins)
    rng = np.random.default_rng(21)
    for trial in range(6):
        qf, gf, qp, gp, qc, gc = random_identity_problem(rng, 30, 200, 5, quantized=trial % 2 == 1)
        qp[0] = 99  # a query without any match (skipped / counted as AP 0 by the protocol)
        distmat = pairwise_distance(qf, gf).numpy()
        if trial >= 4:
            distmat = -distmat  # negative distances
        expected = reference_rank(distmat, qp, gp, qc, gc, max_rank=15, protocol=protocol)
        for dm in (distmat, distmat.astype(np.float64)):
            got = evaluate_rank(dm, qp, gp, qc, gc, 15, protocol, chunk_size=int(rng.integers(1, 31)))
            assert_same(got, expected)


@pytest.mark.parametrize("binned_fraction", [0.0, 2.0], ids=["binned", "listed"])
def test_both_ranking_paths_on_galleries_smaller_than_the_bin_counts(binned_fraction, monkeypatch):
    # fewer gallery items than bins and than overflow bins per side, few identities (several good items)
    monkeypatch.setattr(reid_module, "_BINNED_FRACTION", binned_fraction)
    rng = np.random.default_rng(8)
    for num_g in (1, 2, 3, 5, 9, 17):
        for quantized in (False, True):
            qf, gf, qp, gp, qc, gc = random_identity_problem(rng, 7, num_g, 3, num_ids=3, quantized=quantized)
            distmat = pairwise_distance(qf, gf).numpy()
            matched = ((qp[:, None] == gp[None]) & (qc[:, None] != gc[None])).any()
            for protocol in ("torchreid", "mars_official"):
                if protocol == "torchreid" and not matched:
                    with pytest.raises(ValueError, match="none of the 7 queries"):
                        evaluate_rank(distmat, qp, gp, qc, gc, 5, protocol)
                    continue
                expected = reference_rank(distmat, qp, gp, qc, gc, max_rank=5, protocol=protocol)
                assert_same(evaluate_rank(distmat, qp, gp, qc, gc, 5, protocol), expected)


@pytest.mark.parametrize("protocol", ["torchreid", "mars_official"])
def test_weak_model_takes_the_binned_path_with_the_same_numbers(protocol, monkeypatch):
    # features without identity signal: most items lie before each query's last good match
    calls = []
    binned = reid_module._binned_negatives_before
    monkeypatch.setattr(reid_module, "_binned_negatives_before", lambda *a: calls.append(1) or binned(*a))
    rng = np.random.default_rng(5)
    qp, gp = rng.integers(1, 6, 40), rng.integers(-1, 6, 500)
    qc, gc = rng.integers(0, 3, 40), rng.integers(0, 3, 500)
    distmat = rng.standard_normal((40, 500)).astype(np.float32)
    expected = reference_rank(distmat, qp, gp, qc, gc, protocol=protocol)
    assert_same(evaluate_rank(distmat, qp, gp, qc, gc, protocol=protocol), expected)
    assert calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binned_path_is_exact_on_extreme_values_and_ties(dtype, monkeypatch):
    # few distinct values spanning the float range, denormals, -0.0 and neighbours one ulp apart: the bin
    # map must stay monotone (overflowing spans, huge scales) and send exact ties to the exact keys
    monkeypatch.setattr(reid_module, "_BINNED_FRACTION", 0.0)
    one_up = float(np.nextafter(dtype(1), dtype(2)))
    values = np.array([-3e38, -1.0, -0.0, 0.0, 1e-45, 1e-40, 1.0, one_up, 2.0, 3e38], dtype=dtype)
    rng = np.random.default_rng(17)
    for trial in range(8):
        qp, gp = rng.integers(1, 4, 12), rng.integers(-1, 4, 90)
        qc, gc = rng.integers(0, 2, 12), rng.integers(0, 2, 90)
        distmat = rng.choice(values[trial % 3 :], size=(12, 90))
        for protocol in ("torchreid", "mars_official"):
            expected = reference_rank(distmat, qp, gp, qc, gc, max_rank=20, protocol=protocol)
            assert_same(evaluate_rank(distmat, qp, gp, qc, gc, 20, protocol), expected)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 4097])
def test_sparse_nonzero_equals_torch_nonzero(n):
    # flags beyond n, up to the end of the last 8-byte word and past it, must not be reported
    gen = torch.Generator().manual_seed(n)
    for density in (0.0, 0.002, 0.05, 0.5, 1.0):
        flags = torch.ones(-(-n // 8) * 8 + 16, dtype=torch.bool)
        flags[:n] = torch.rand(n, generator=gen) < density
        expected = torch.nonzero(flags[:n]).view(-1)
        assert torch.equal(reid_module._sparse_nonzero(flags, n), expected)


def test_block_size_does_not_change_results():
    rng = np.random.default_rng(9)
    qf, gf, qp, gp, qc, gc = random_identity_problem(rng, 37, 250, 8, quantized=True)
    distmat = pairwise_distance(qf, gf, normalize=True)
    for protocol in ("torchreid", "mars_official"):
        base = evaluate_rank(distmat, qp, gp, qc, gc, protocol=protocol)
        for chunk in (1, 2, 5, 13, 36, 37, 100):
            assert_same(evaluate_rank(distmat, qp, gp, qc, gc, protocol=protocol, chunk_size=chunk), base)
            got = evaluate_features(qf, gf, qp, gp, qc, gc, protocol=protocol, chunk_size=chunk)
            assert_same(got, base)


def test_numpy_and_tensor_inputs_and_device_argument_give_identical_results():
    rng = np.random.default_rng(4)
    qf, gf, qp, gp, qc, gc = random_identity_problem(rng, 30, 180, 8)
    distmat = pairwise_distance(qf, gf, normalize=True)
    ids = [torch.from_numpy(a) for a in (qp, gp, qc, gc)]
    for protocol in ("torchreid", "mars_official"):
        runs = [
            evaluate_rank(distmat.numpy(), qp, gp, qc, gc, protocol=protocol),
            evaluate_rank(distmat, *ids, protocol=protocol),
            evaluate_rank(distmat.numpy(), qp, gp, qc, gc, protocol=protocol, device="cpu"),
            evaluate_rank(distmat, *ids, protocol=protocol, device=torch.device("cpu")),
            evaluate_features(qf.numpy(), gf.numpy(), qp, gp, qc, gc, protocol=protocol),
            evaluate_features(qf, gf, *ids, protocol=protocol, device="cpu"),
        ]
        for r in runs[1:]:
            assert (r["mAP"], r["mINP"], r["num_valid_queries"]) == (
                runs[0]["mAP"],
                runs[0]["mINP"],
                runs[0]["num_valid_queries"],
            )
            np.testing.assert_array_equal(r["cmc"], runs[0]["cmc"])


def test_default_device_is_where_the_input_lives():
    # no GPU needed: a tensor on the "meta" device shows that the default follows the tensor
    assert reid_module._resolve_device(None, torch.empty(2, 3, device="meta")).type == "meta"
    assert reid_module._resolve_device(None, np.zeros((2, 3))).type == "cpu"
    assert reid_module._resolve_device("cpu", torch.empty(2, 3, device="meta")).type == "cpu"


def test_block_sizes_follow_the_cache_budget():
    cpu = torch.device("cpu")
    assert reid_module._cache_bytes() > 0
    rank, product = reid_module._block_rows(None, 1980, 12180, cpu)
    expected = reid_module._cache_bytes() // (reid_module._RANK_BYTES_PER_ELEMENT * 12180)
    assert rank == min(1980, max(1, expected))
    assert product % rank == 0 or product == 1980
    # the ordering keys cap the rows of a block: rows * 2^32 * gallery < 2^63
    rank, _ = reid_module._block_rows(10**6, 10**6, 5000, cpu)
    assert rank * 5000 < 2**31


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_numbers():
    rng = np.random.default_rng(2)
    # small integer features: the products are exact on both devices, so the rankings are identical
    qf, gf, qp, gp, qc, gc = random_identity_problem(rng, 50, 400, 8, quantized=True)
    for protocol in ("torchreid", "mars_official"):
        cpu = evaluate_features(qf, gf, qp, gp, qc, gc, normalize=False, protocol=protocol)
        gpu = evaluate_features(qf.cuda(), gf.cuda(), qp, gp, qc, gc, normalize=False, protocol=protocol)
        assert_same(gpu, cpu)
        distmat = pairwise_distance(qf, gf)
        on_gpu = evaluate_rank(distmat.cuda(), qp, gp, qc, gc, protocol=protocol, chunk_size=7)
        assert_same(on_gpu, evaluate_rank(distmat, qp, gp, qc, gc, protocol=protocol))
