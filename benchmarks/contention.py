#!/usr/bin/env python3
"""Quick-start training throughput alone and next to other CPU-bound processes, per CPU thread setting.

    python benchmarks/contention.py                       # 0 and 1 busy processes; auto vs every core
    python benchmarks/contention.py --busy 0 1 2 --threads 0 1 2

Trains ``configs/synthetic/tanet_r18.yaml`` (``tools/train.py``, the config's 2 DataLoader workers) for
``--epochs`` epochs on a freshly generated synthetic action set (``--videos`` training videos) while ``N``
(``--busy``) CPU-bound processes run beside it, and reports the clips/s of the last epoch (the first
includes start-up) from ``train.log``. ``--busy-kind``: ``python``, a one-thread busy loop; ``torch``,
matrix products on torch's default threads, like another training run. ``--threads``: values of the
``num_threads`` key; 0 is the default policy (cores minus data workers, ``video_attn.engine.cpu_threads``),
the number of cores is torch's own default. ``OMP_NUM_THREADS`` is removed from every process's environment.

Target: next to one busy process, at least half of the clips/s alone (a fair share of 2 cores), with the
default setting.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/synthetic/tanet_r18.yaml"
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ done: .*?([\d.]+) clips/s")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="busy processes beside training")
    p.add_argument("--busy-kind", default="python", choices=sorted(BUSY),
                   help="python: a one-thread busy loop; torch: matrix products on torch's default threads")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="num_threads values to compare (default: 0 and the number of cores)")
    p.add_argument("--videos", type=int, default=256, help="training videos (64 per class by default)")
    p.add_argument("--epochs", type=int, default=2)
    return p.parse_args()


BUSY = {
    "python": "while True: pass",  # one thread
    # torch's default threads (one per core), as another training or test run would use
    "torch": "import torch\na = torch.randn(256, 256)\nwhile True: a @ a",
}


def busy_process(kind: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.Popen([sys.executable, "-c", BUSY[kind]], env=env)


def train_clips_per_s(data: Path, work_dir: Path, num_threads: int, epochs: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [sys.executable, str(REPO / "tools/train.py"), str(CONFIG), f"work_dir={work_dir}",
           f"data.root={data}", "train.iters=0", f"train.epochs={epochs}",
           f"train.eval_every_epochs={epochs + 1}", f"num_threads={num_threads}"]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    rates = [float(m.group(2)) for m in EPOCH_LINE.finditer((work_dir / "train.log").read_text())]
    return rates[-1]


def main() -> None:
    args = parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = args.threads if args.threads is not None else [0, cores]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        per_class = max(args.videos // 4, 2)
        subprocess.run([sys.executable, str(REPO / "tools/make_synthetic.py"), "action", "--out", str(data),
                        "--train-per-class", str(per_class), "--val-per-class", "2"], check=True,
                       stdout=subprocess.DEVNULL, cwd=REPO)
        print(f"{cores} cores; TANet-R18 quick start, {4 * per_class} videos, clips/s of epoch "
              f"{args.epochs}; busy processes: {args.busy_kind}")
        results: dict[tuple[int, int], float] = {}
        for busy in args.busy:
            for threads in settings:
                hogs = [busy_process(args.busy_kind) for _ in range(busy)]
                try:
                    time.sleep(0.5)
                    work_dir = Path(tmp) / f"run_t{threads}_b{busy}"
                    results[threads, busy] = train_clips_per_s(data, work_dir, threads, args.epochs)
                finally:
                    for hog in hogs:
                        hog.kill()
                        hog.wait()
    print("\n| num_threads | " + " | ".join(f"{b} busy: clips/s" for b in args.busy)
          + " | " + " | ".join(f"{b} busy / alone" for b in args.busy if b) + " |")
    print("|---" * (1 + len(args.busy) + sum(1 for b in args.busy if b)) + "|")
    for threads in settings:
        name = f"{threads} (default policy)" if threads == 0 else f"{threads}"
        alone = results.get((threads, 0))
        rates = " | ".join(f"{results[threads, b]:.1f}" for b in args.busy)
        ratios = " | ".join(f"{results[threads, b] / alone:.2f}" if alone else "-" for b in args.busy if b)
        print(f"| {name} | {rates} | {ratios} |")


if __name__ == "__main__":
    main()
