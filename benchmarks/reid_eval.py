"""ReID evaluation speed and memory: video_attn against torchreid's evaluators and re-ranking, side by side.

Peers (torchreid, MIT licence, copied below with its notice): the Cython evaluator ``evaluate_cy`` (its
``rank_cy.pyx``, built here with Cython into a temporary folder; the torchreid package on PyPI ships no
.pyx, so the source is taken from an installed torchreid when it has one, else from the copy below), its
Python evaluator ``eval_market1501`` and its k-reciprocal ``re_ranking``.

MARS size: 1,980 queries x 12,180 gallery tracklets (all test tracklets), 2,048-d float32
features, torchreid protocol. Identities and cameras come from the real MARS metadata with
``--mars-info DIR`` (the folder with tracks_test_info.mat and query_IDX.mat), else from a synthetic layout
of the same sizes (the output says which). Features: identity centre + camera shift + noise, in three
regimes: ``trained`` (about 80 mAP), ``weak`` (about 7 mAP) and ``random`` (no identity signal: the
evaluators' worst case, every good match deep in the list).

Per regime, interleaved, median of ``--repeats``: the query x gallery product alone (the floor for
evaluating from features), ``evaluate_features``, ``evaluate_rank`` on the distance matrix, torchreid
Cython on the same matrix, torch.cdist + torchreid Cython from the features; once: torchreid Python
(``--skip-torchreid-python``), and ``mars_official`` against a per-query NumPy reference. Peak memory is
each call's peak RSS above the RSS before it (Linux: /proc/self/clear_refs). A ratio is the median over
the repeats of that repeat's ratio (its two calls run close together, so a machine whose speed drifts
between repeats moves both sides alike), not the ratio of the medians. All numbers must agree
(asserted, 1e-6). Targets: ``evaluate_rank`` <= 1.0x torchreid Cython; ``evaluate_features`` <= 1.2x the
product. Re-ranking (``--skip-rerank``): ours against torchreid's ``re_ranking`` at MARS size, once each,
time and peak memory. MSMT17 size (``--msmt``): ``evaluate_features`` on 11,659 x 82,161 x 2,048 in a
subprocess, its peak RSS (target < 4 GB).

  python benchmarks/reid_eval.py [--mars-info data/MARS/info] [--repeats 5]
      [--regimes trained,weak,random] [--skip-torchreid-python] [--skip-rerank] [--msmt]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from video_attn.evaluation.reid import evaluate_features, evaluate_rank, pairwise_distance
from video_attn.evaluation.rerank import re_ranking, re_ranking_features

REGIMES = {"trained": 0.4, "weak": 0.3, "random": 0.0}  # identity-centre scale of the 2,048-d features

# ================================================================================== torchreid (the peer)
# The code below, up to the next banner, is copied from torchreid
# (https://github.com/KaiyangZhou/deep-person-reid: torchreid/metrics/rank_cylib/rank_cy.pyx,
# torchreid/metrics/rank.py: eval_market1501, torchreid/utils/rerank.py: re_ranking), unchanged but for
# names and formatting of the Python functions. Its licence:
#
# MIT License
#
# Copyright (c) 2018 Kaiyang Zhou
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.

TORCHREID_RANK_CY_PYX = r'''# cython: boundscheck=False, wraparound=False, nonecheck=False, cdivision=True

from __future__ import print_function
import numpy as np
from libc.stdint cimport int64_t, uint64_t

import cython

cimport numpy as np

import random
from collections import defaultdict

"""
Compiler directives:
https://github.com/cython/cython/wiki/enhancements-compilerdirectives

Cython tutorial:
https://cython.readthedocs.io/en/latest/src/userguide/numpy_tutorial.html

Credit to https://github.com/luzai
"""


# Main interface
cpdef evaluate_cy(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, use_metric_cuhk03=False):
    distmat = np.asarray(distmat, dtype=np.float32)
    q_pids = np.asarray(q_pids, dtype=np.int64)
    g_pids = np.asarray(g_pids, dtype=np.int64)
    q_camids = np.asarray(q_camids, dtype=np.int64)
    g_camids = np.asarray(g_camids, dtype=np.int64)
    if use_metric_cuhk03:
        return eval_cuhk03_cy(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    return eval_market1501_cy(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)


cpdef eval_cuhk03_cy(float[:,:] distmat, int64_t[:] q_pids, int64_t[:]g_pids,
                     int64_t[:]q_camids, int64_t[:]g_camids, int64_t max_rank):

    cdef int64_t num_q = distmat.shape[0]
    cdef int64_t num_g = distmat.shape[1]

    if num_g < max_rank:
        max_rank = num_g
        print('Note: number of gallery samples is quite small, got {}'.format(num_g))

    cdef:
        int64_t num_repeats = 10
        int64_t[:,:] indices = np.argsort(distmat, axis=1)
        int64_t[:,:] matches = (np.asarray(g_pids)[np.asarray(indices)] == np.asarray(q_pids)[:, np.newaxis]).astype(np.int64)

        float[:,:] all_cmc = np.zeros((num_q, max_rank), dtype=np.float32)
        float[:] all_AP = np.zeros(num_q, dtype=np.float32)
        float num_valid_q = 0. # number of valid query

        int64_t q_idx, q_pid, q_camid, g_idx
        int64_t[:] order = np.zeros(num_g, dtype=np.int64)
        int64_t keep

        float[:] raw_cmc = np.zeros(num_g, dtype=np.float32) # binary vector, positions with value 1 are correct matches
        float[:] masked_raw_cmc = np.zeros(num_g, dtype=np.float32)
        float[:] cmc, masked_cmc
        int64_t num_g_real, num_g_real_masked, rank_idx, rnd_idx
        uint64_t meet_condition
        float AP
        int64_t[:] kept_g_pids, mask

        float num_rel
        float[:] tmp_cmc = np.zeros(num_g, dtype=np.float32)
        float tmp_cmc_sum

    for q_idx in range(num_q):
        # get query pid and camid
        q_pid = q_pids[q_idx]
        q_camid = q_camids[q_idx]

        # remove gallery samples that have the same pid and camid with query
        for g_idx in range(num_g):
            order[g_idx] = indices[q_idx, g_idx]
        num_g_real = 0
        meet_condition = 0
        kept_g_pids = np.zeros(num_g, dtype=np.int64)

        for g_idx in range(num_g):
            if (g_pids[order[g_idx]] != q_pid) or (g_camids[order[g_idx]] != q_camid):
                raw_cmc[num_g_real] = matches[q_idx][g_idx]
                kept_g_pids[num_g_real] = g_pids[order[g_idx]]
                num_g_real += 1
                if matches[q_idx][g_idx] > 1e-31:
                    meet_condition = 1

        if not meet_condition:
            # this condition is true when query identity does not appear in gallery
            continue

        # cuhk03-specific setting
        g_pids_dict = defaultdict(list) # overhead!
        for g_idx in range(num_g_real):
            g_pids_dict[kept_g_pids[g_idx]].append(g_idx)

        cmc = np.zeros(max_rank, dtype=np.float32)
        for _ in range(num_repeats):
            mask = np.zeros(num_g_real, dtype=np.int64)

            for _, idxs in g_pids_dict.items():
                # randomly sample one image for each gallery person
                rnd_idx = np.random.choice(idxs)
                #rnd_idx = idxs[0] # use deterministic for debugging
                mask[rnd_idx] = 1

            num_g_real_masked = 0
            for g_idx in range(num_g_real):
                if mask[g_idx] == 1:
                    masked_raw_cmc[num_g_real_masked] = raw_cmc[g_idx]
                    num_g_real_masked += 1

            masked_cmc = np.zeros(num_g, dtype=np.float32)
            function_cumsum(masked_raw_cmc, masked_cmc, num_g_real_masked)
            for g_idx in range(num_g_real_masked):
                if masked_cmc[g_idx] > 1:
                    masked_cmc[g_idx] = 1

            for rank_idx in range(max_rank):
                cmc[rank_idx] += masked_cmc[rank_idx] / num_repeats

        for rank_idx in range(max_rank):
            all_cmc[q_idx, rank_idx] = cmc[rank_idx]
        # compute average precision
        # reference: https://en.wikipedia.org/wiki/Evaluation_measures_(information_retrieval)#Average_precision
        function_cumsum(raw_cmc, tmp_cmc, num_g_real)
        num_rel = 0
        tmp_cmc_sum = 0
        for g_idx in range(num_g_real):
            tmp_cmc_sum += (tmp_cmc[g_idx] / (g_idx + 1.)) * raw_cmc[g_idx]
            num_rel += raw_cmc[g_idx]
        all_AP[q_idx] = tmp_cmc_sum / num_rel
        num_valid_q += 1.

    assert num_valid_q > 0, 'Error: all query identities do not appear in gallery'

    # compute averaged cmc
    cdef float[:] avg_cmc = np.zeros(max_rank, dtype=np.float32)
    for rank_idx in range(max_rank):
        for q_idx in range(num_q):
            avg_cmc[rank_idx] += all_cmc[q_idx, rank_idx]
        avg_cmc[rank_idx] /= num_valid_q

    cdef float mAP = 0
    for q_idx in range(num_q):
        mAP += all_AP[q_idx]
    mAP /= num_valid_q

    return np.asarray(avg_cmc).astype(np.float32), mAP


cpdef eval_market1501_cy(float[:,:] distmat, int64_t[:] q_pids, int64_t[:]g_pids,
                         int64_t[:]q_camids, int64_t[:]g_camids, int64_t max_rank):

    cdef int64_t num_q = distmat.shape[0]
    cdef int64_t num_g = distmat.shape[1]

    if num_g < max_rank:
        max_rank = num_g
        print('Note: number of gallery samples is quite small, got {}'.format(num_g))

    cdef:
        int64_t[:,:] indices = np.argsort(distmat, axis=1)
        int64_t[:,:] matches = (np.asarray(g_pids)[np.asarray(indices)] == np.asarray(q_pids)[:, np.newaxis]).astype(np.int64)

        float[:,:] all_cmc = np.zeros((num_q, max_rank), dtype=np.float32)
        float[:] all_AP = np.zeros(num_q, dtype=np.float32)
        float num_valid_q = 0. # number of valid query

        int64_t q_idx, q_pid, q_camid, g_idx
        int64_t[:] order = np.zeros(num_g, dtype=np.int64)
        int64_t keep

        float[:] raw_cmc = np.zeros(num_g, dtype=np.float32) # binary vector, positions with value 1 are correct matches
        float[:] cmc = np.zeros(num_g, dtype=np.float32)
        int64_t num_g_real, rank_idx
        uint64_t meet_condition

        float num_rel
        float[:] tmp_cmc = np.zeros(num_g, dtype=np.float32)
        float tmp_cmc_sum

    for q_idx in range(num_q):
        # get query pid and camid
        q_pid = q_pids[q_idx]
        q_camid = q_camids[q_idx]

        # remove gallery samples that have the same pid and camid with query
        for g_idx in range(num_g):
            order[g_idx] = indices[q_idx, g_idx]
        num_g_real = 0
        meet_condition = 0

        for g_idx in range(num_g):
            if (g_pids[order[g_idx]] != q_pid) or (g_camids[order[g_idx]] != q_camid):
                raw_cmc[num_g_real] = matches[q_idx][g_idx]
                num_g_real += 1
                if matches[q_idx][g_idx] > 1e-31:
                    meet_condition = 1

        if not meet_condition:
            # this condition is true when query identity does not appear in gallery
            continue

        # compute cmc
        function_cumsum(raw_cmc, cmc, num_g_real)
        for g_idx in range(num_g_real):
            if cmc[g_idx] > 1:
                cmc[g_idx] = 1

        for rank_idx in range(max_rank):
            all_cmc[q_idx, rank_idx] = cmc[rank_idx]
        num_valid_q += 1.

        # compute average precision
        # reference: https://en.wikipedia.org/wiki/Evaluation_measures_(information_retrieval)#Average_precision
        function_cumsum(raw_cmc, tmp_cmc, num_g_real)
        num_rel = 0
        tmp_cmc_sum = 0
        for g_idx in range(num_g_real):
            tmp_cmc_sum += (tmp_cmc[g_idx] / (g_idx + 1.)) * raw_cmc[g_idx]
            num_rel += raw_cmc[g_idx]
        all_AP[q_idx] = tmp_cmc_sum / num_rel

    assert num_valid_q > 0, 'Error: all query identities do not appear in gallery'

    # compute averaged cmc
    cdef float[:] avg_cmc = np.zeros(max_rank, dtype=np.float32)
    for rank_idx in range(max_rank):
        for q_idx in range(num_q):
            avg_cmc[rank_idx] += all_cmc[q_idx, rank_idx]
        avg_cmc[rank_idx] /= num_valid_q

    cdef float mAP = 0
    for q_idx in range(num_q):
        mAP += all_AP[q_idx]
    mAP /= num_valid_q

    return np.asarray(avg_cmc).astype(np.float32), mAP


# Compute the cumulative sum
cdef void function_cumsum(cython.numeric[:] src, cython.numeric[:] dst, int64_t n):
    cdef int64_t i
    dst[0] = src[0]
    for i in range(1, n):
        dst[i] = src[i] + dst[i - 1]
'''  # noqa: E501 (verbatim source)


def torchreid_eval_market1501(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """torchreid.metrics.rank.eval_market1501 (its Python evaluator), as released."""
    num_q, num_g = distmat.shape
    if num_g < max_rank:
        max_rank = num_g
        print("Note: number of gallery samples is quite small, got {}".format(num_g))  # noqa: UP032
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    # compute cmc curve for each query
    all_cmc = []
    all_AP = []
    num_valid_q = 0.0  # number of valid query
    for q_idx in range(num_q):
        # get query pid and camid
        q_pid = q_pids[q_idx]
        q_camid = q_camids[q_idx]
        # remove gallery samples that have the same pid and camid with query
        order = indices[q_idx]
        remove = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
        keep = np.invert(remove)
        # compute cmc curve
        raw_cmc = matches[q_idx][keep]  # binary vector, positions with value 1 are correct matches
        if not np.any(raw_cmc):
            # this condition is true when query identity does not appear in gallery
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        num_valid_q += 1.0
        # compute average precision
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = [x / (i + 1.0) for i, x in enumerate(tmp_cmc)]
        tmp_cmc = np.asarray(tmp_cmc) * raw_cmc
        AP = tmp_cmc.sum() / num_rel
        all_AP.append(AP)
    assert num_valid_q > 0, "Error: all query identities do not appear in gallery"
    all_cmc = np.asarray(all_cmc).astype(np.float32)
    all_cmc = all_cmc.sum(0) / num_valid_q
    mAP = np.mean(all_AP)
    return all_cmc, mAP


def torchreid_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """torchreid.utils.rerank.re_ranking, as released. torchreid's header: "Source:
    https://github.com/zhunzhong07/person-re-ranking. Created on Mon Jun 26 14:46:56 2017, @author: luohao.
    Modified by Houjing Huang, 2017-12-22 (accepts distance matrices; float32 instead of float16)."
    CVPR2017 paper: Zhong Z, Zheng L, Cao D, et al. Re-ranking Person Re-identification with k-reciprocal
    Encoding."""
    # The following naming, e.g. gallery_num, is different from outer scope.
    # Don't care about it.
    original_dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)],
        axis=0,
    )
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist).astype(np.int32)

    query_num = q_g_dist.shape[0]
    gallery_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    all_num = gallery_num

    for i in range(all_num):
        # k-reciprocal neighbors
        forward_k_neigh_index = initial_rank[i, : k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, : k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[candidate, : int(np.around(k1 / 2.0)) + 1]
            candidate_backward_k_neigh_index = initial_rank[
                candidate_forward_k_neigh_index, : int(np.around(k1 / 2.0)) + 1
            ]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2.0 / 3 * len(
                candidate_k_reciprocal_index
            ):
                k_reciprocal_expansion_index = np.append(
                    k_reciprocal_expansion_index, candidate_k_reciprocal_index
                )

        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num,]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])

    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)

    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = []
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]]
            )
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)

    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    del original_dist
    del V
    del jaccard_dist
    final_dist = final_dist[:query_num, query_num:]
    return final_dist


# ============================================================================ end of the torchreid copy


def build_rank_cy() -> tuple[Callable | None, str]:
    """torchreid's ``evaluate_cy`` compiled from its .pyx -> (function or None, what was built / why not)."""
    try:
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension
    except ImportError:
        return None, "skipped: Cython is not installed (pip install cython, part of the dev extra)"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return None, f"skipped: no C compiler ({compiler}) on this machine"
    source, origin = TORCHREID_RANK_CY_PYX, "the copy in this benchmark"
    spec = importlib.util.find_spec("torchreid")
    if spec is not None and spec.submodule_search_locations:
        found = sorted(p for loc in spec.submodule_search_locations for p in Path(loc).rglob("rank_cy.pyx"))
        if found:
            source, origin = found[0].read_text(), str(found[0])
    build = Path(tempfile.mkdtemp(prefix="rank_cy_"))
    (build / "rank_cy.pyx").write_text(source)
    ext = Extension("rank_cy", [str(build / "rank_cy.pyx")], include_dirs=[np.get_include()])
    dist = Distribution({"ext_modules": cythonize([ext], language_level=3, quiet=True)})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib, cmd.build_temp = str(build), str(build / "tmp")
    t = time.perf_counter()
    old_cwd = os.getcwd()
    try:
        os.chdir(build)  # cythonize writes rank_cy.c beside the .pyx; the compiler runs from here
        dist.run_command("build_ext")
    except Exception as err:  # noqa: BLE001 - any build failure means: no Cython peer
        return None, f"skipped: building rank_cy failed ({type(err).__name__}: {err})"
    finally:
        os.chdir(old_cwd)
    built = next(build.glob("rank_cy*.so"), None) or next(build.glob("rank_cy*.pyd"))
    module_spec = importlib.util.spec_from_file_location("rank_cy", built)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    shutil.rmtree(build, ignore_errors=True)  # the loaded library stays mapped
    return module.evaluate_cy, f"built from {origin} in {time.perf_counter() - t:.0f} s"


# ----------------------------------------------------------------------------------------------- memory
def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc malloc_trim), so the next peak counts its own pages."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_mb(fn: Callable[[], object]) -> tuple[float, object]:
    """(peak RSS during ``fn()`` above the RSS before it in MB, its result); NaN where Linux's peak reset
    (/proc/self/clear_refs) is unavailable. The result is dropped before the next measurement."""
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak) to the current RSS
    except OSError:
        return float("nan"), fn()
    before = _status_mb("VmRSS")
    out = fn()
    return _status_mb("VmHWM") - before, out


# ------------------------------------------------------------------------------------------------- data
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


def mars_layout(mars_info: Path | None, rng: np.random.Generator):
    """(gallery pids, gallery cameras, query indices, description) of the MARS test split."""
    if mars_info is not None:
        from scipy.io import loadmat

        info = loadmat(mars_info / "tracks_test_info.mat")["track_test_info"].astype(np.int64)
        query = loadmat(mars_info / "query_IDX.mat")["query_IDX"].ravel().astype(np.int64) - 1
        return info[:, 2], info[:, 3], query, f"real MARS metadata from {mars_info}"
    # same sizes, synthetic layout: 636 ids + distractors + junk over 6 cameras
    pids = np.concatenate([rng.integers(1, 637, 8062), np.zeros(3248, np.int64), -np.ones(870, np.int64)])
    camids = rng.integers(1, 7, len(pids))
    query = rng.choice(np.nonzero(pids > 0)[0], 1980, replace=False)
    return pids, camids, np.sort(query), "SYNTHETIC MARS-size layout (no --mars-info given)"


def numpy_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="torchreid"):
    """Plain per-query loop: stable argsort, junk filter, AP / INP / CMC of the protocol."""
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        same = g_pids[order] == q_pids[i]
        junk = same & (g_camids[order] == q_camids[i])
        if protocol == "mars_official":
            junk |= g_pids[order] == -1
        matches = (same & (g_camids[order] != q_camids[i]))[~junk]
        if not matches.any():
            if protocol == "torchreid":
                continue
            all_ap.append(0.0)
            all_inp.append(0.0)
            all_cmc.append(np.zeros(max_rank))
            continue
        ranks = np.nonzero(matches)[0] + 1
        n_good = len(ranks)
        at = np.arange(1, n_good + 1) / ranks
        if protocol == "torchreid":
            ap = at.mean()
        else:
            prev = np.where(ranks > 1, np.arange(n_good) / np.maximum(ranks - 1, 1), 1.0)
            ap = ((prev + at) / 2).sum() / n_good
        cmc = np.zeros(max_rank)
        cmc[ranks[0] - 1 :] = 1
        all_ap.append(ap)
        all_inp.append(n_good / ranks[-1])
        all_cmc.append(cmc)
    return {"mAP": float(np.mean(all_ap)), "mINP": float(np.mean(all_inp)), "cmc": np.mean(all_cmc, 0)}


def agree(ours: dict, peer_cmc: np.ndarray, peer_map: float, what: str, tol: float = 1e-6) -> float:
    diff = max(abs(ours["mAP"] - float(peer_map)), float(np.abs(ours["cmc"] - np.asarray(peer_cmc)).max()))
    assert diff <= tol, f"{what}: results differ by {diff:.2e} (ours mAP {ours['mAP']}, peer {peer_map})"
    return diff


# ------------------------------------------------------------------------------------------------ cases
def run_regime(name, scale, layout, repeats, evaluate_cy, torchreid_python, rng_seed=0):
    pids, camids, query, _ = layout
    rng = np.random.default_rng(rng_seed)
    feats = identity_features(pids, camids, 2048, rng, id_scale=scale)
    qf, gf = torch.from_numpy(feats[query]), torch.from_numpy(feats)
    q_pids, q_camids = pids[query], camids[query]
    args = (q_pids, pids, q_camids, camids)
    distmat = pairwise_distance(qf, gf, normalize=True).numpy()  # what evaluate_features ranks by
    qn, gn = torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1)

    methods: dict[str, Callable[[], object]] = {
        "product": lambda: qf @ gf.t(),
        "features": lambda: evaluate_features(qf, gf, *args),
        "rank": lambda: evaluate_rank(distmat, *args),
    }
    if evaluate_cy is not None:
        methods["cython"] = lambda: evaluate_cy(distmat, *args, 50)
        methods["cdist_cython"] = lambda: evaluate_cy(torch.cdist(qn, gn).numpy(), *args, 50)
    times: dict[str, list[float]] = {k: [] for k in methods}
    results: dict[str, object] = {}
    for _ in range(repeats):  # interleaved: load changes hit every method alike
        for key, fn in methods.items():
            t = time.perf_counter()
            results[key] = fn()
            times[key].append(time.perf_counter() - t)
    row = {k: float(np.median(v)) for k, v in times.items()}
    ratios = {
        f"{a}/{b}": float(np.median(np.divide(times[a], times[b])))
        for a, b in (("features", "product"), ("rank", "cython"), ("features", "cdist_cython"))
        if a in times and b in times
    }
    del results["product"]  # 96 MB that would otherwise stay resident during the memory pass
    memory = {k: peak_mb(fn)[0] for k, fn in methods.items()}

    ours = results["rank"]
    diffs = {"features vs rank": agree(results["features"], ours["cmc"], ours["mAP"], "features vs rank")}
    if evaluate_cy is not None:
        cmc, mAP = results["cython"]
        diffs["rank vs torchreid Cython"] = agree(
            ours, cmc, mAP, f"{name}: evaluate_rank vs torchreid Cython"
        )
    if torchreid_python:
        t = time.perf_counter()
        memory["python"], (cmc, mAP) = peak_mb(lambda: torchreid_eval_market1501(distmat, *args, 50))
        row["python"] = time.perf_counter() - t
        diffs["rank vs torchreid Python"] = agree(
            ours, cmc, mAP, f"{name}: evaluate_rank vs torchreid Python"
        )
    ref = numpy_reference(distmat, *args)
    diffs["mINP vs reference"] = abs(ours["mINP"] - ref["mINP"])
    assert diffs["mINP vs reference"] <= 1e-6, (name, "mINP", ours["mINP"], ref["mINP"])
    t = time.perf_counter()
    official = evaluate_rank(distmat, *args, protocol="mars_official")
    row["rank_official"] = time.perf_counter() - t
    ref = numpy_reference(distmat, *args, protocol="mars_official")
    diffs["mars_official vs reference"] = agree(official, ref["cmc"], ref["mAP"], f"{name}: mars_official")
    assert abs(official["mINP"] - ref["mINP"]) <= 1e-6, (name, "mars_official mINP")
    return {
        "regime": name,
        "mAP": ours["mAP"],
        "rank1": float(ours["cmc"][0]),
        "mINP": ours["mINP"],
        "mAP_mars_official": official["mAP"],
        "seconds": row,
        "ratios": ratios,
        "peak_mb": memory,
        "max_diff": diffs,
    }


def run_rerank(layout) -> dict:
    """Ours vs torchreid's re_ranking at MARS size (trained regime), once each."""
    pids, camids, query, _ = layout
    feats = identity_features(pids, camids, 2048, np.random.default_rng(0), id_scale=REGIMES["trained"])
    qf, gf = torch.from_numpy(feats[query]), torch.from_numpy(feats)
    del feats
    q_g = pairwise_distance(qf, gf, normalize=True).numpy()
    q_q = pairwise_distance(qf, qf, normalize=True).numpy()
    g_g = pairwise_distance(gf, gf, normalize=True).numpy()
    out = {}
    for key, fn in (
        ("ours_blocks", lambda: re_ranking(q_g, q_q, g_g)),
        ("ours_features", lambda: re_ranking_features(qf, gf)),
        ("torchreid", lambda: torchreid_re_ranking(q_g, q_q, g_g)),
    ):
        t = time.perf_counter()
        mem, dist = peak_mb(fn)
        out[key] = {"seconds": time.perf_counter() - t, "peak_mb": mem, "dist": dist}
    q_pids, q_camids = pids[query], camids[query]
    peer = out["torchreid"]["dist"]
    for value in out.values():
        dist = value.pop("dist")
        value["mAP"] = evaluate_rank(dist, q_pids, pids, q_camids, camids)["mAP"]
        value["max_abs_diff_vs_torchreid"] = float(np.abs(dist - peer).max())
    return out


def run_msmt() -> dict:
    """MSMT17 size in its own process (its peak RSS): evaluate_features and the chunked product alone."""
    rng = np.random.default_rng(1)
    num_ids, num_cams, num_q, num_g, dim = 3060, 15, 11659, 82161, 2048
    g_pids, q_pids = rng.integers(0, num_ids, num_g), rng.integers(0, num_ids, num_q)
    g_cams, q_cams = rng.integers(0, num_cams, num_g), rng.integers(0, num_cams, num_q)
    # one generator call for both sets keeps query and gallery on the same identity centres
    feats = identity_features(
        np.concatenate([q_pids, g_pids]) + 1, np.concatenate([q_cams, g_cams]), dim, rng, id_scale=0.38
    )
    qf, gf = torch.from_numpy(feats[:num_q]), torch.from_numpy(feats[num_q:])
    del feats
    rss_features = _status_mb("VmRSS")
    t = time.perf_counter()
    ours = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams)
    ours_s = time.perf_counter() - t
    peak = _status_mb("VmHWM")
    t = time.perf_counter()
    gt = gf.t()
    for s in range(0, num_q, 1024):  # the floor in chunks: a full product would be 3.8 GB
        qf[s : s + 1024] @ gt
    return {
        "Q": num_q,
        "G": num_g,
        "mAP": ours["mAP"],
        "ours_s": ours_s,
        "product_s": time.perf_counter() - t,
        "rss_features_mb": rss_features,
        "peak_rss_mb": peak,
    }


# ------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mars-info", type=Path, help="folder with MARS tracks_test_info.mat, query_IDX.mat")
    parser.add_argument("--repeats", type=int, default=5, help="median of N interleaved runs")
    parser.add_argument("--regimes", default=",".join(REGIMES), help=f"comma list of {', '.join(REGIMES)}")
    parser.add_argument("--skip-torchreid-python", action="store_true", help="skip the slow Python peer")
    parser.add_argument("--skip-rerank", action="store_true", help="skip the re-ranking comparison")
    parser.add_argument("--msmt", action="store_true", help="also the MSMT17-size memory case (minutes)")
    parser.add_argument("--child", choices=("msmt",), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "msmt":
        print(json.dumps(run_msmt()))
        return
    if args.mars_info is not None and not (args.mars_info / "tracks_test_info.mat").is_file():
        parser.error(f"--mars-info {args.mars_info}: no tracks_test_info.mat there")

    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}, repeats {args.repeats}")
    evaluate_cy, how = build_rank_cy()
    print(f"torchreid Cython evaluator: {how}")
    layout = mars_layout(args.mars_info, np.random.default_rng(0))
    print(
        f"layout: {layout[3]}; {len(layout[2])} queries x {len(layout[0])} gallery, 2,048-d, "
        "torchreid protocol"
    )
    names = {
        "product": "query x gallery product alone (floor)",
        "features": "ours: evaluate_features (from features)",
        "rank": "ours: evaluate_rank (from the distance matrix)",
        "cython": "torchreid Cython evaluate_cy (distance matrix)",
        "cdist_cython": "torch.cdist + torchreid Cython (from features)",
        "python": "torchreid Python eval_market1501 (1 run)",
        "rank_official": "ours: evaluate_rank, mars_official (1 run)",
    }
    result = {"load_before": os.getloadavg(), "layout": layout[3], "regimes": []}
    for name in args.regimes.split(","):
        r = run_regime(name, REGIMES[name], layout, args.repeats, evaluate_cy, not args.skip_torchreid_python)
        result["regimes"].append(r)
        sec, mem = r["seconds"], r["peak_mb"]
        print(
            f"\n[{name}] mAP {100 * r['mAP']:.2f}  rank-1 {100 * r['rank1']:.2f}  mINP {100 * r['mINP']:.2f}"
            f"  (mars_official mAP {100 * r['mAP_mars_official']:.2f})"
        )
        print(f"  {'':50s} {'seconds':>8s} {'peak MB':>8s}")
        for key, label in names.items():
            if key in sec:
                peak = f"{mem[key]:8.0f}" if key in mem else f"{'-':>8s}"
                print(f"  {label:50s} {sec[key]:8.3f} {peak}")
        ratios = r["ratios"]
        if "rank/cython" in ratios:
            print(f"  evaluate_rank / torchreid Cython      {ratios['rank/cython']:5.2f}x  (target <= 1.0x)")
            print(f"  evaluate_features / cdist + Cython    {ratios['features/cdist_cython']:5.2f}x")
        print(f"  evaluate_features / product          {ratios['features/product']:5.2f}x  (target <= 1.2x)")
        print(
            "  agreement (asserted <= 1e-6): " + ", ".join(f"{k} {v:.1e}" for k, v in r["max_diff"].items())
        )

    if not args.skip_rerank:
        rr = run_rerank(layout)
        result["rerank"] = rr
        print("\nk-reciprocal re-ranking, MARS size (trained regime), k1=20 k2=6 lambda=0.3, one run each")
        print(f"  {'':44s} {'seconds':>8s} {'peak MB':>8s} {'mAP':>7s} {'max |diff| vs torchreid':>25s}")
        for key, label in (
            ("torchreid", "torchreid re_ranking (distance blocks)"),
            ("ours_blocks", "ours: re_ranking (distance blocks)"),
            ("ours_features", "ours: re_ranking_features (features)"),
        ):
            v = rr[key]
            print(
                f"  {label:44s} {v['seconds']:8.1f} {v['peak_mb']:8.0f} {100 * v['mAP']:7.2f} "
                f"{v['max_abs_diff_vs_torchreid']:25.1e}"
            )
    if args.msmt:
        cmd = [sys.executable, __file__, "--child", "msmt"]
        msmt = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
        result["msmt17"] = msmt
        print(
            f"\nMSMT17 size {msmt['Q']} x {msmt['G']} x 2048: evaluate_features {msmt['ours_s']:.1f} s "
            f"(product alone {msmt['product_s']:.1f} s), mAP {100 * msmt['mAP']:.2f}; peak RSS "
            f"{msmt['peak_rss_mb']:.0f} MB of which features {msmt['rss_features_mb']:.0f} MB "
            "(target < 4096 MB)"
        )
    result["load_after"] = os.getloadavg()
    print(f"\nload average after {result['load_after']}")
    print("JSON " + json.dumps(result, default=float))


if __name__ == "__main__":
    main()
