"""Cost of each attention gate (and 3x3 conv replacement) on ResNet-50 relative to plain ResNet-50, eager and
compiled.

For every variant and both execution modes (eager; ``torch.compile`` with the default inductor backend):
forward (eval, no_grad) and forward+backward (train) time divided by plain ResNet-50's in the same mode:
eager gate vs eager plain, compiled gate vs compiled plain. Both sides are measured in the same run,
interleaved: each repetition times plain and the variant back to back, in alternating order (ABBA), and the
ratio reported is the median over repetitions of these paired ratios. Parameters and the FLOP ratio
(torch.utils.flop_counter, forward) are printed next to the ratios for context. On CPU the default clock is
the process CPU time with 1 thread (``--clock cpu``): on a shared machine it measures our own work;
``--clock wall`` is available. On CUDA: wall time after synchronisation, bf16 autocast, channels_last.

    python benchmarks/attention.py [--quick] [--device cpu|cuda] [--batch N] [--size PX] [--reps N]
                                   [--variants se,cbam] [--modes eager,compiled] [--no-backward]
                                   [--clock cpu|wall] [--threads N]

``--quick``: the four gates only (no conv replacements), 3 repetitions. Smallest smoke run:
``--quick --variants se --size 64 --batch 1 --reps 1`` (64 px: training BN needs layer4 above 1x1).
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
    "se": {"attention": "se"},
    "eca": {"attention": "eca", "attention_kwargs": {"k_size": [3, 5, 5, 7]}},
    "cbam": {"attention": "cbam"},
    "sa": {"attention": "sa"},
}
CONV_VARIANTS: dict[str, dict] = {name: {"conv": name} for name in CONVS}


def count_flops(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / x.shape[0]


def make_step(model: nn.Module, x: torch.Tensor, backward: bool, device: str) -> Callable[[], None]:
    """One forward (no_grad) or one forward+backward of ``model`` (eager or compiled) on ``x``."""
    params = [p for p in model.parameters() if p.requires_grad]
    amp = {"device_type": device, "dtype": torch.bfloat16, "enabled": device == "cuda"}

    def step() -> None:
        with torch.autocast(**amp), torch.set_grad_enabled(backward):
            out = model(x)
        if backward:  # gradients are returned and discarded: no accumulation into .grad
            torch.autograd.grad(out.float().sum(), params, allow_unused=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def paired_ratios(
    plain: Callable[[], None],
    variants: dict[str, Callable[[], None]],
    reps: int,
    warmup: int,
    clock: Callable[[], float],
) -> tuple[float, dict[str, float]]:
    """Best plain time, and per variant the median over repetitions of (variant time / plain time), each
    pair timed back to back with the order alternating per repetition."""
    for step in (plain, *variants.values()):
        for _ in range(warmup):
            step()
    plain_times: list[float] = []
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(reps):
        for name, step in variants.items():
            pair = {}
            order = [("plain", plain), (name, step)]
            for key, fn in order if rep % 2 == 0 else order[::-1]:
                t0 = clock()
                fn()
                pair[key] = clock() - t0
            plain_times.append(pair["plain"])
            ratios[name].append(pair[name] / pair["plain"])
    return min(plain_times), {name: statistics.median(r) for name, r in ratios.items()}


def load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="gates only, 3 repetitions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default 2 on CPU, 32 on CUDA")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=None, help="default 7 (3 with --quick)")
    parser.add_argument("--variants", default=None, help="comma-separated subset, e.g. se,cbam")
    parser.add_argument("--modes", default="eager,compiled", help="eager, compiled or both (default)")
    parser.add_argument("--no-backward", action="store_true")
    parser.add_argument(
        "--clock", choices=["cpu", "wall"], default=None, help="default cpu on CPU, wall on CUDA"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default 1 with --clock cpu)")
    args = parser.parse_args()
    device = args.device
    batch = args.batch or (32 if device == "cuda" else 2)
    reps = args.reps or (3 if args.quick else 7)
    clock_name = args.clock or ("wall" if device == "cuda" else "cpu")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    if device == "cpu":
        torch.set_num_threads(args.threads or (1 if clock_name == "cpu" else torch.get_num_threads()))
    modes = args.modes.split(",")
    if not set(modes) <= {"eager", "compiled"}:
        parser.error(f"--modes takes eager and/or compiled, got {args.modes!r}")
    torch.manual_seed(0)

    available = dict(GATE_VARIANTS) if args.quick else {**GATE_VARIANTS, **CONV_VARIANTS}
    if args.variants:
        names = args.variants.split(",")
        unknown = [n for n in names if n not in {**GATE_VARIANTS, **CONV_VARIANTS}]
        if unknown:
            parser.error(f"unknown variants {unknown}; valid: {', '.join([*GATE_VARIANTS, *CONV_VARIANTS])}")
        available = {n: {**GATE_VARIANTS, **CONV_VARIANTS}[n] for n in names}

    memory_format = torch.channels_last if device == "cuda" else torch.contiguous_format
    x = torch.randn(batch, 3, args.size, args.size, device=device).contiguous(memory_format=memory_format)
    models: dict[str, nn.Module] = {"plain": resnet50().to(device, memory_format=memory_format)}
    for name, kwargs in available.items():
        try:
            models[name] = resnet50(**kwargs).to(device, memory_format=memory_format)
        except (TypeError, ValueError) as e:  # a replacement that cannot build on R50 is reported, not fatal
            print(f"skip {name}: {type(e).__name__}: {e}")
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    flops = {n: count_flops(m.eval(), x[:1]) for n, m in models.items()}

    print(
        f"ResNet-50 {args.size}px batch {batch} on {device} ({torch.get_num_threads()} threads), "
        f"reps {reps}, clock {clock_name}, load before: {load()}"
    )
    passes = [("fwd", False)] + ([] if args.no_backward else [("fwd+bwd", True)])
    columns = [(mode, p, backward) for mode in modes for p, backward in passes]
    plain_time: dict[str, float] = {}
    ratio: dict[str, dict[str, float]] = {}
    # Every model compiles the same ResNet.forward: one dynamo cache entry per model and pass. Past the
    # default limit (8) dynamo would silently run the remaining models eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 2 * len(models) + 2)
    for mode in modes:
        runners = {n: (torch.compile(m) if mode == "compiled" else m) for n, m in models.items()}
        for p, backward in passes:
            for m in models.values():
                m.train(backward)  # forward in eval mode, training step in train mode
            steps = {n: make_step(r, x, backward, device) for n, r in runners.items()}
            # two warm-up calls: compilation, then the first run of the compiled code
            plain_time[f"{mode} {p}"], ratio[f"{mode} {p}"] = paired_ratios(
                steps.pop("plain"), steps, reps, warmup=2, clock=clock
            )
    print(f"load after: {load()}")
    print("plain ResNet-50 images/s: " + ", ".join(f"{k} {batch / t:.1f}" for k, t in plain_time.items()))

    header = "| variant | params (M) | FLOP ratio | " + " | ".join(f"{m} {p}" for m, p, _ in columns) + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in models:
        if name == "plain":
            continue
        cells = [f"{ratio[f'{m} {p}'][name]:.3f}" for m, p, _ in columns]
        row = [name, f"{params[name] / 1e6:.3f}", f"{flops[name] / flops['plain']:.3f}", *cells]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
