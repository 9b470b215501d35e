"""Cost of each attention gate (and 3x3 conv replacement) on ResNet-50 next to the plain ResNet-50.

For every variant: parameters, FLOPs (torch.utils.flop_counter, per image), images/s forward and
forward+backward, and the time ratio against plain ResNet-50 next to the FLOP ratio. Variants are timed
interleaved (plain, A, A, plain, plain, B, ...) so every variant run has a plain run right next to it; the
time ratio is the median over repetitions of these paired ratios, images/s come from the best run. On CPU the
default clock is the process CPU time with 1 thread (``--clock cpu``): on a machine shared with other jobs
it measures our own work, where wall time mostly measures the other jobs; ``--clock wall`` is available.

Target: a gate costs at most its FLOP share + 10% time (time ratio <= FLOP ratio + 0.10); SE, ECA and SA
within 1.10x of plain forward on CPU.

    python benchmarks/attention.py [--quick] [--device cpu|cuda] [--batch N] [--size PX] [--reps N]
                                   [--clock cpu|wall] [--threads N] [--no-backward]

CUDA path (when available): bf16 autocast + channels_last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from video_attn.models.attention import CONVS
from video_attn.models.backbones import resnet50

GATE_VARIANTS: dict[str, dict] = {
    "plain": {},
    "se": {"attention": "se"},
    "eca": {"attention": "eca", "attention_kwargs": {"k_size": [3, 5, 5, 7]}},
    "cbam": {"attention": "cbam"},
    "sa": {"attention": "sa"},
}
TARGET_GATES = ("se", "eca", "sa")  # the 1.10x forward target


def count_flops(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / x.shape[0]


def make_step(model: nn.Module, x: torch.Tensor, backward: bool, device: str) -> Callable[[], None]:
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step() -> None:
        if backward:
            model.zero_grad(set_to_none=True)
            with amp:
                out = model(x)
            out.float().sum().backward()
        else:
            with torch.no_grad(), amp:
                model(x)
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def time_interleaved(
    steps: dict[str, Callable[[], None]], reps: int, warmup: int, clock: Callable[[], float]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per variant: best time over repetitions, and the median of ratios to the plain run next to it."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    ratios: dict[str, list[float]] = {name: [] for name in steps}
    for rep in range(reps):
        for name in steps:
            if name == "plain":
                continue
            # plain and variant back to back, order alternating per repetition (ABBA), so each ratio
            # compares two runs under the same machine load
            pair = {}
            for key in ("plain", name) if rep % 2 == 0 else (name, "plain"):
                t0 = clock()
                steps[key]()
                pair[key] = clock() - t0
                times[key].append(pair[key])
            ratios[name].append(pair[name] / pair["plain"])
    best = {name: min(ts) for name, ts in times.items()}
    ratio = {name: (statistics.median(r) if r else 1.0) for name, r in ratios.items()}
    return best, ratio


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="gates only, fewer repetitions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default 2 on CPU, 32 on CUDA")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=None, help="default 7 (3 with --quick)")
    parser.add_argument("--no-backward", action="store_true")
    parser.add_argument(
        "--clock", choices=["cpu", "wall"], default=None, help="default cpu on CPU, wall on CUDA"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads on CPU (default 1 with --clock cpu)"
    )
    args = parser.parse_args()
    device = args.device
    batch = args.batch or (32 if device == "cuda" else 2)
    reps = args.reps or (3 if args.quick else 5)
    clock_name = args.clock or ("wall" if device == "cuda" else "cpu")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    if device == "cpu":
        torch.set_num_threads(args.threads or (1 if clock_name == "cpu" else torch.get_num_threads()))
    torch.manual_seed(0)

    variants = dict(GATE_VARIANTS)
    if not args.quick:
        for name in CONVS:
            variants[name] = {"conv": name}

    models: dict[str, nn.Module] = {}
    for name, kwargs in variants.items():
        try:
            models[name] = resnet50(**kwargs).to(device)
        except Exception as e:  # a replacement that cannot build on R50 is reported, not fatal
            print(f"skip {name}: {type(e).__name__}: {e}")
    x = torch.randn(batch, 3, args.size, args.size, device=device)
    if device == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
        for m in models.values():
            m.to(memory_format=torch.channels_last)

    params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    flops = {n: count_flops(m.eval(), x[:1]) for n, m in models.items()}

    print(
        f"ResNet-50 {args.size}px batch {batch} on {device} ({torch.get_num_threads()} threads), "
        f"reps {reps}, clock {clock_name}, load before: {load()}"
    )
    results: dict[str, dict[str, float]] = {}
    paired: dict[str, dict[str, float]] = {}
    modes = [("fwd", False)] + ([] if args.no_backward else [("fwd+bwd", True)])
    for mode, backward in modes:
        steps = {}
        for name, m in models.items():
            m.train(backward)  # forward in eval mode, training step in train mode
            steps[name] = make_step(m, x, backward, device)
        results[mode], paired[mode] = time_interleaved(steps, reps, warmup=1, clock=clock)
    print(f"load after: {load()}")

    mode_cols = " | ".join(f"{m} img/s | {m} time ratio" for m, _ in modes)
    header = f"| variant | params (M) | GFLOPs/img | FLOP ratio | {mode_cols} | target |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    base_flops = flops["plain"]
    for name in models:
        fr = flops[name] / base_flops
        cells = []
        ok = True
        for mode, _ in modes:
            t = results[mode][name]
            ratio = paired[mode][name]
            cells += [f"{batch / t:.2f}", f"{ratio:.3f}"]
            if name != "plain":
                ok &= ratio <= fr + 0.10
        if name in TARGET_GATES:
            ok &= paired["fwd"][name] <= 1.10
        verdict = "-" if name == "plain" else ("ok" if ok else "MISS")
        row = [name, f"{params[name] / 1e6:.3f}", f"{flops[name] / 1e9:.3f}", f"{fr:.3f}", *cells, verdict]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
