"""Benchmark: building the MARS tracklet index (real metadata: 8,298 + 12,180 tracklets, 1.19M frame names).

Compares, in one run:
  baseline  - the torchreid way, re-done on every start: per tracklet, slice the name list, check pid and
              camera of every name in Python, build the list of full frame paths (a Python list of 1.19M str);
  ours-cold - video_attn.data.datasets.mars.load_mars without a cache (vectorised checks, bytes arrays);
  ours-warm - load_mars from its .npz cache (what every run after the first does).
The name lists are generated consistently with the real .mat files (the real lists are not shipped).

    python benchmarks/reid_mars_index.py --info DIR/MARS/info [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import scipy.io

from video_attn.data.datasets.mars import load_mars


def write_root(info: Path, root: Path) -> None:
    (root / "info").mkdir(parents=True)
    for name in ("tracks_train_info.mat", "tracks_test_info.mat", "query_IDX.mat"):
        shutil.copy(info / name, root / "info" / name)
    for split, var in (("train", "track_train_info"), ("test", "track_test_info")):
        tracks = scipy.io.loadmat(str(info / f"tracks_{split}_info.mat"))[var]
        names, counter = [], {}
        for _s, _e, pid, cam in tracks:
            counter[(pid, cam)] = counter.get((pid, cam), 0) + 1
            folder = "00-1" if pid == -1 else f"{pid:04d}"
            names += [f"{folder}C{cam}T{counter[(pid, cam)]:04d}F{f:03d}.jpg" for f in range(1, _e - _s + 2)]
        (root / "info" / f"{split}_name.txt").write_text("\n".join(names) + "\n")


def torchreid_style(root: Path) -> int:
    """The per-tracklet Python loop of torchreid's MARS loader (re-implemented here, not copied)."""
    total = 0
    for split, var in (("train", "track_train_info"), ("test", "track_test_info")):
        with open(root / "info" / f"{split}_name.txt") as f:
            names = [line.rstrip() for line in f if line.strip()]
        tracks = scipy.io.loadmat(str(root / "info" / f"tracks_{split}_info.mat"))[var]
        tracklets = []
        for start, end, pid, cam in tracks:
            img_names = names[start - 1 : end]
            pids = {-1 if n[:4] == "00-1" else int(n[:4]) for n in img_names}
            cams = {int(n[5]) for n in img_names}
            if pids != {pid} or cams != {cam}:
                raise ValueError("inconsistent tracklet")
            paths = [os.path.join(str(root), f"bbox_{split}", n[:4], n) for n in img_names]
            tracklets.append((tuple(paths), int(pid), int(cam)))
        total += len(tracklets)
    return total


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--info", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "MARS"
        write_root(args.info, root)
        cache = Path(tmp) / "cache"
        base = best_of(lambda: torchreid_style(root), args.repeat)
        cold = best_of(lambda: load_mars(root, use_cache=False), args.repeat)
        load_mars(root, cache_dir=cache)  # fill the cache
        warm = best_of(lambda: load_mars(root, cache_dir=cache), args.repeat)
        m = load_mars(root, cache_dir=cache)
        assert len(m.train) == 8298 and len(m.test) == 12180
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print("| method | time (s) | speed-up vs baseline |")
    print("|---|---|---|")
    print(f"| torchreid-style per-tracklet loop | {base:.2f} | 1.0x |")
    print(f"| load_mars, no cache | {cold:.2f} | {base / cold:.1f}x |")
    print(f"| load_mars, cached | {warm:.2f} | {base / warm:.1f}x |")


if __name__ == "__main__":
    main()
