"""ReID evaluation speed and memory: video_attn's chunked evaluator vs a per-query numpy loop.

The numpy loop is how torchreid's Python evaluator works: the full (Q, G) distance matrix, then per query
a full argsort, the junk filter and the metrics. Both sides run in this process on the same features and
must give identical numbers (asserted). Also timed: the query x gallery matrix product alone (the floor).

Cases:
- MARS size: 1,980 queries x 12,180 gallery, 512-d, mars_official protocol (gallery = all test tracklets,
  queries included, pid -1 junk), identities / cameras from the real MARS metadata when present.
- MSMT17 size: 11,659 x 82,161, 2,048-d, torchreid protocol, in a subprocess so its peak RSS is its own;
  the numpy loop runs on a subset of queries and its time is extrapolated (flagged).

  python benchmarks/reid_eval.py [--skip-msmt] [--msmt-loop-queries 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from video_attn.evaluation.reid import evaluate_features, evaluate_rank, pairwise_distance

# the real MARS metadata in the shared/ folder beside the checkout (override with MARS_INFO=DIR)
MARS_INFO = Path(os.environ.get("MARS_INFO", Path(__file__).resolve().parents[2] / "shared/data/mars_info"))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------- the anchor
def numpy_loop(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="torchreid"):
    """Per-query full argsort, as torchreid's eval_market1501 (Python version) does."""
    num_q = distmat.shape[0]
    all_cmc, all_ap, all_inp = [], [], []
    skipped = 0
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        same = g_pids[order] == q_pids[i]
        junk = same & (g_camids[order] == q_camids[i])
        if protocol == "mars_official":
            junk |= g_pids[order] == -1
        matches = (same & (g_camids[order] != q_camids[i]))[~junk]
        if not matches.any():
            if protocol == "torchreid":
                skipped += 1
                continue
            all_ap.append(0.0)
            all_inp.append(0.0)
            all_cmc.append(np.zeros(max_rank))
            continue
        hits = np.cumsum(matches)
        ranks = np.nonzero(matches)[0] + 1
        cmc = (hits[:max_rank] > 0).astype(np.float64)
        if len(cmc) < max_rank:
            cmc = np.concatenate([cmc, np.ones(max_rank - len(cmc))])
        n_good = len(ranks)
        at = np.arange(1, n_good + 1) / ranks
        if protocol == "torchreid":
            ap = at.mean()
        else:
            prev = np.where(ranks > 1, np.arange(n_good) / np.maximum(ranks - 1, 1), 1.0)
            ap = ((prev + at) / 2).sum() / n_good
        all_ap.append(ap)
        all_inp.append(n_good / ranks[-1])
        all_cmc.append(cmc)
    return {
        "mAP": float(np.mean(all_ap)),
        "mINP": float(np.mean(all_inp)),
        "cmc": np.mean(all_cmc, 0),
        "num_valid_queries": len(all_ap),
        "num_skipped_queries": skipped,
    }


def torchreid_style_loop(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The shape of torchreid's pure-Python evaluator (torchreid protocol): argsort of the whole matrix,
    a (Q, G) integer match matrix, then per query the junk filter and the AP written element by element
    in Python. Stable argsort (torchreid's default quicksort orders ties arbitrarily)."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q in range(distmat.shape[0]):
        order = indices[q]
        keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        raw = matches[q][keep]
        if not raw.any():
            continue
        cmc = raw.cumsum()
        last = np.where(raw == 1)[0].max()
        all_inp.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        hits = raw.cumsum()
        precision = np.asarray([x / (i + 1.0) for i, x in enumerate(hits)]) * raw
        all_ap.append(precision.sum() / raw.sum())
    return {
        "mAP": float(np.mean(all_ap)),
        "mINP": float(np.mean(all_inp)),
        "cmc": np.asarray(all_cmc, dtype=np.float64).mean(0),
        "num_valid_queries": len(all_ap),
    }


def assert_identical(a: dict, b: dict, what: str) -> float:
    diff = max(abs(a["mAP"] - b["mAP"]), abs(a["mINP"] - b["mINP"]), float(np.abs(a["cmc"] - b["cmc"]).max()))
    assert diff < 1e-9 and a["num_valid_queries"] == b["num_valid_queries"], (what, diff, a, b)
    return diff


# -------------------------------------------------------------------------------------------- features
def identity_features(pids, camids, dim, rng, id_scale, cam_scale=0.25):
    """Unit-noise features around a per-identity centre plus a per-camera shift (the usual camera bias).
    pid -1 (junk) and 0 (distractors) get no identity centre. float32 throughout (memory)."""
    noise = rng.standard_normal((len(pids), dim), dtype=np.float32)
    uniq, inverse = np.unique(pids, return_inverse=True)
    centers = rng.standard_normal((len(uniq), dim), dtype=np.float32) * np.float32(id_scale / np.sqrt(dim))
    centers[uniq <= 0] = 0
    cams = rng.standard_normal((int(camids.max()) + 1, dim), dtype=np.float32) * np.float32(
        cam_scale / np.sqrt(dim)
    )
    noise *= np.float32(1 / np.sqrt(dim))
    for s in range(0, len(pids), 8192):  # in slices: no second full-size temporary
        noise[s : s + 8192] += centers[inverse[s : s + 8192]] + cams[camids[s : s + 8192]]
    return noise


def mars_layout(rng):
    if (MARS_INFO / "tracks_test_info.mat").exists():
        from scipy.io import loadmat

        info = loadmat(MARS_INFO / "tracks_test_info.mat")["track_test_info"].astype(np.int64)
        query = loadmat(MARS_INFO / "query_IDX.mat")["query_IDX"].ravel().astype(np.int64) - 1
        return info[:, 2], info[:, 3], query, "real MARS metadata"
    # same sizes, synthetic layout: 636 ids + distractors + junk over 6 cameras
    pids = np.concatenate([rng.integers(1, 637, 8062), np.zeros(3248, np.int64), -np.ones(870, np.int64)])
    camids = rng.integers(1, 7, len(pids))
    query = rng.choice(np.nonzero(pids > 0)[0], 1980, replace=False)
    return pids, camids, np.sort(query), "synthetic MARS-like layout"


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def run_mars(repeats: int, torchreid_style: bool = True) -> dict:
    rng = np.random.default_rng(0)
    pids, camids, query, source = mars_layout(rng)
    feats = identity_features(pids, camids, 512, rng, id_scale=0.52)  # ~75% mAP, ~91% rank-1
    qf, gf = torch.from_numpy(feats[query]), torch.from_numpy(feats)
    q_pids, q_camids = pids[query], camids[query]

    def ours(protocol):
        return evaluate_features(qf, gf, q_pids, pids, q_camids, camids, protocol=protocol, device="cpu")

    matmul_s, _ = timed(lambda: qf @ gf.t(), repeats)
    ours_s, official = timed(lambda: ours("mars_official"), repeats)
    ours_tr_s, torchreid = timed(lambda: ours("torchreid"), repeats)

    def distances():
        return pairwise_distance(qf, gf, normalize=True).numpy()

    dist_s, distmat = timed(distances, 1)
    loop_s, ref = timed(
        lambda: numpy_loop(distmat, q_pids, pids, q_camids, camids, protocol="mars_official"), 1
    )
    loop_tr_s, ref_tr = timed(lambda: numpy_loop(distmat, q_pids, pids, q_camids, camids), 1)
    style_s, ref_style = float("nan"), None
    if torchreid_style:  # minutes on a loaded 2-core machine
        style_s, ref_style = timed(lambda: torchreid_style_loop(distmat, q_pids, pids, q_camids, camids), 1)
    rank_s, from_rank = timed(
        lambda: evaluate_rank(distmat, q_pids, pids, q_camids, camids, protocol="mars_official"), 1
    )
    diff = max(
        assert_identical(official, ref, "evaluate_features vs numpy loop (mars_official)"),
        assert_identical(from_rank, ref, "evaluate_rank vs numpy loop (mars_official)"),
        assert_identical(torchreid, ref_tr, "evaluate_features vs numpy loop (torchreid)"),
    )
    if ref_style is not None:
        diff = max(diff, assert_identical(torchreid, ref_style, "evaluate_features vs torchreid-style loop"))
    return {
        "case": "MARS",
        "layout": source,
        "Q": len(query),
        "G": len(pids),
        "dim": 512,
        "mAP_official": official["mAP"],
        "rank1_official": float(official["cmc"][0]),
        "mAP_torchreid": torchreid["mAP"],
        "matmul_s": matmul_s,
        "ours_official_s": ours_s,
        "ours_torchreid_s": ours_tr_s,
        "evaluate_rank_s": rank_s,
        "distmat_s": dist_s,
        "numpy_loop_official_s": dist_s + loop_s,
        "numpy_loop_torchreid_s": dist_s + loop_tr_s,
        "torchreid_style_loop_s": dist_s + style_s,
        "max_abs_diff": diff,
    }


def run_msmt(loop_queries: int) -> dict:
    """Runs in its own process (peak RSS)."""
    rng = np.random.default_rng(1)
    num_ids, num_cams, num_q, num_g, dim = 3060, 15, 11659, 82161, 2048
    g_pids = rng.integers(0, num_ids, num_g)
    q_pids = rng.integers(0, num_ids, num_q)
    g_cams, q_cams = rng.integers(0, num_cams, num_g), rng.integers(0, num_cams, num_q)
    # one generator call for both sets keeps query and gallery on the same identity centres
    feats = identity_features(
        np.concatenate([q_pids, g_pids]) + 1, np.concatenate([q_cams, g_cams]), dim, rng, id_scale=0.38
    )
    qf, gf = torch.from_numpy(feats[:num_q]), torch.from_numpy(feats[num_q:])
    del feats
    rss_before = rss_mb()
    peak_before = peak_rss_mb()
    t = time.perf_counter()
    ours = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, device="cpu")
    ours_s = time.perf_counter() - t
    peak_eval = peak_rss_mb()
    # the floor: the product alone, in the same chunks (a full 11,659 x 82,161 product is 3.8 GB)
    t = time.perf_counter()
    gt = gf.t()
    for s in range(0, num_q, 512):
        qf[s : s + 512] @ gt
    matmul_s = time.perf_counter() - t
    # numpy loop on a subset, extrapolated; compared with our evaluator on the same subset
    sub = np.sort(rng.choice(num_q, loop_queries, replace=False))
    t = time.perf_counter()
    distmat = pairwise_distance(qf[sub], gf, normalize=True).numpy()
    ref = numpy_loop(distmat, q_pids[sub], g_pids, q_cams[sub], g_cams)
    loop_sub_s = time.perf_counter() - t
    del distmat
    ours_sub = evaluate_features(qf[sub], gf, q_pids[sub], g_pids, q_cams[sub], g_cams, device="cpu")
    diff = assert_identical(ours_sub, ref, "MSMT17 subset")
    return {
        "case": "MSMT17",
        "Q": num_q,
        "G": num_g,
        "dim": dim,
        "protocol": "torchreid",
        "mAP": ours["mAP"],
        "rank1": float(ours["cmc"][0]),
        "ours_s": ours_s,
        "matmul_s": matmul_s,
        "numpy_loop_subset_queries": loop_queries,
        "numpy_loop_subset_s": loop_sub_s,
        "numpy_loop_extrapolated_s": loop_sub_s * num_q / loop_queries,
        "max_abs_diff_subset": diff,
        "rss_before_eval_mb": rss_before,
        "peak_rss_before_eval_mb": peak_before,
        "peak_rss_after_eval_mb": peak_eval,
        "peak_rss_total_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of N for the fast timings")
    parser.add_argument("--skip-msmt", action="store_true")
    parser.add_argument(
        "--skip-torchreid-style", action="store_true", help="skip the slow Python-loop anchor"
    )
    parser.add_argument("--msmt-loop-queries", type=int, default=200)
    parser.add_argument("--child", choices=("msmt",), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "msmt":
        print(json.dumps(run_msmt(args.msmt_loop_queries)))
        return

    print(f"load average: {os.getloadavg()}  torch threads: {torch.get_num_threads()}")
    mars = run_mars(args.repeats, not args.skip_torchreid_style)
    mm = mars["matmul_s"]
    print(
        f"\nMARS size {mars['Q']} x {mars['G']} x {mars['dim']} ({mars['layout']}): mars_official mAP "
        f"{100 * mars['mAP_official']:.2f} rank-1 {100 * mars['rank1_official']:.2f}; torchreid mAP "
        f"{100 * mars['mAP_torchreid']:.2f}"
    )
    rows = [
        ("matrix product alone (floor)", mm),
        ("evaluate_features, mars_official", mars["ours_official_s"]),
        ("evaluate_features, torchreid", mars["ours_torchreid_s"]),
        ("evaluate_rank on a given distmat", mars["evaluate_rank_s"]),
        ("numpy per-query loop, mars_official (+distmat)", mars["numpy_loop_official_s"]),
        ("numpy per-query loop, torchreid (+distmat)", mars["numpy_loop_torchreid_s"]),
        ("torchreid-style Python loop (+distmat)", mars["torchreid_style_loop_s"]),
    ]
    for name, sec in rows:
        print(f"  {name:48s} {sec:8.3f} s  {sec / mm:6.2f}x product")
    print(
        f"  ours vs numpy loop: "
        f"{mars['numpy_loop_official_s'] / mars['ours_official_s']:.1f}x (mars_official), "
        f"{mars['numpy_loop_torchreid_s'] / mars['ours_torchreid_s']:.1f}x (torchreid); vs torchreid-style "
        f"loop {mars['torchreid_style_loop_s'] / mars['ours_torchreid_s']:.1f}x  (target >= 30x)"
    )
    print(f"  identical numbers (asserted): max |diff| = {mars['max_abs_diff']:.2e}")
    result = {"load_before": os.getloadavg(), "mars": mars}
    if not args.skip_msmt:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "msmt",
            "--msmt-loop-queries",
            str(args.msmt_loop_queries),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        msmt = json.loads(out.strip().splitlines()[-1])
        result["msmt17"] = msmt
        print(
            f"\nMSMT17 size {msmt['Q']} x {msmt['G']} x {msmt['dim']}, torchreid: "
            f"mAP {100 * msmt['mAP']:.2f}, "
            f"rank-1 {100 * msmt['rank1']:.2f}"
        )
        print(f"  matrix product alone (chunked) {msmt['matmul_s']:8.2f} s")
        print(
            f"  evaluate_features              {msmt['ours_s']:8.2f} s  = "
            f"{msmt['ours_s'] / msmt['matmul_s']:.2f}x the product"
        )
        print(
            f"  numpy loop on {msmt['numpy_loop_subset_queries']} queries "
            f"{msmt['numpy_loop_subset_s']:.2f} s "
            f"-> EXTRAPOLATED to all queries {msmt['numpy_loop_extrapolated_s']:.1f} s "
            f"({msmt['numpy_loop_extrapolated_s'] / msmt['ours_s']:.1f}x ours)"
        )
        print(
            f"  peak RSS of the subprocess {msmt['peak_rss_total_mb']:.0f} MB (features alone "
            f"{msmt['rss_before_eval_mb']:.0f} MB; peak after evaluate_features "
            f"{msmt['peak_rss_after_eval_mb']:.0f} MB; target < 4096 MB)"
        )
        print(f"  identical numbers on the subset: max |diff| = {msmt['max_abs_diff_subset']:.2e}")
    result["load_after"] = os.getloadavg()
    print(f"\nload average after: {result['load_after']}")
    print("JSON " + json.dumps(result, default=float))


if __name__ == "__main__":
    main()
