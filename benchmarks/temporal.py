#!/usr/bin/env python3
"""TAM aggregation speed (shifted sum vs the official grouped conv) and TANet-R50 vs TSN-R50 step time.

    python benchmarks/temporal.py [--repeats 5] [--batch 2] [--segments 8] [--size 224] [--kernel-size 3]
                                  [--compile] [--skip-models]

Part 1: Eq. 4 of TAM (the aggregation) on the four TANet-R50 layer shapes (8 segments x batch 2 at 224 px;
TAM sits on the bottleneck width after conv1): (16, 64, 56, 56), (16, 128, 28, 28), (16, 256, 14, 14),
(16, 512, 7, 7). Three implementations side by side, forward (no grad) and forward + backward, median of
``--repeats`` after a warm-up, geometric mean over the shapes:

- ``shift``: the library's default, ``ShiftedWeightedSumFunction``: the shifted, weighted copies accumulated
  in place, with a written-out backward;
- ``shift_autograd``: the same sum as K zero-padded shifted copies times coefficients in plain tensor ops,
  autograd's backward;
- ``shift_inplace``: the same sum in plain ops as in-place slice accumulation (defined here only);
- ``grouped_conv``: the official formulation (permuted copy, one grouped conv2d with groups = N*C).

Then the whole TAM module with ``aggregation="shift"`` against ``"grouped_conv"`` (both share the global and
local branches). Target: the module with the shifted sum faster than grouped conv in forward and not slower in
forward + backward. ``--compile`` also times each variant under ``torch.compile``.

Part 2: one SGD training step (forward, backward, optimizer) of TANet-R50 and TSN-R50 on the same clip
batch. Target: TANet step time <= 1.35x TSN.

On CUDA the same measurements run with bf16 autocast and channels_last.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from video_attn.config.schema import BackboneConfig, ModelConfig
from video_attn.models import build_model
from video_attn.models.temporal.tam import TAM, tap_coefficients, temporal_adaptive_aggregate

SHAPES = [(64, 56), (128, 28), (256, 14), (512, 7)]


def shift_inplace_aggregate(x: Tensor, kernel: Tensor, importance: Tensor) -> Tensor:
    """Eq. 4 in plain ops as in-place slice accumulation (another plain form, for comparison): a cheaper
    forward than zero-padded shifted copies, a costlier backward (autograd clones per in-place slice)."""
    coef = tap_coefficients(kernel.to(x.dtype), importance.to(x.dtype))[..., None, None]
    num_taps, t = coef.shape[3], x.shape[1]
    pad = num_taps // 2
    out = coef[:, :, :, pad] * x
    for k in range(num_taps):
        d = k - pad
        if d == 0 or abs(d) >= t:
            continue
        if d > 0:
            out[:, : t - d] += coef[:, : t - d, :, k] * x[:, d:]
        else:
            out[:, -d:] += coef[:, -d:, :, k] * x[:, : t + d]
    return out


AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "shift": partial(temporal_adaptive_aggregate, aggregation="shift"),
    "shift_autograd": partial(temporal_adaptive_aggregate, aggregation="shift_autograd"),
    "shift_inplace": shift_inplace_aggregate,
    "grouped_conv": partial(temporal_adaptive_aggregate, aggregation="grouped_conv"),
}


def check_same_values(kernel_size: int) -> None:
    """The three aggregations give the same values and gradients (float64, small shape) before any timing."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4, 4, dtype=torch.float64)
    kernel = torch.rand(2, 3, kernel_size, dtype=torch.float64)
    importance = torch.rand(2, 3, 5, dtype=torch.float64)
    grad = torch.randn_like(x)
    results = []
    for agg in AGGREGATIONS.values():
        inputs = [v.clone().requires_grad_() for v in (x, kernel, importance)]
        out = agg(*inputs)
        results.append((out, *torch.autograd.grad(out, inputs, grad)))
    for name, result in zip(list(AGGREGATIONS)[1:], results[1:]):
        for a, b in zip(results[0], result):
            torch.testing.assert_close(b, a, msg=lambda m, name=name: f"{name} differs from shift: {m}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (and compilation under --compile)
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _layer_inputs(
    args: argparse.Namespace, channels: int, side: int, device: torch.device, amp: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A TAM input (N*T, C, H, W) as the block gives it, the branches' kernel (N, C, K) and importance
    (N, C, T) in float32 (softmax / sigmoid outputs), and an output gradient."""
    nt, n = args.segments * args.batch, args.batch
    x = torch.randn(nt, channels, side, side, device=device)
    if amp:
        x = x.to(torch.bfloat16).to(memory_format=torch.channels_last)
    kernel = torch.softmax(torch.randn(n, channels, args.kernel_size, device=device), dim=-1)
    importance = torch.sigmoid(torch.randn(n, channels, args.segments, device=device))
    return x, kernel, importance, torch.randn_like(x)


def _aggregate_forward(
    agg: Callable, x: Tensor, kernel: Tensor, importance: Tensor, grad: Tensor, t: int
) -> None:
    with (
        torch.no_grad(),
        torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.dtype != torch.float32),
    ):
        agg(x.view(-1, t, *x.shape[1:]), kernel, importance)


def _aggregate_forward_backward(
    agg: Callable, x: Tensor, kernel: Tensor, importance: Tensor, grad: Tensor, t: int
) -> None:
    xg, kg, ig = (v.detach().requires_grad_() for v in (x, kernel, importance))
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.dtype != torch.float32):
        out = agg(xg.view(-1, t, *x.shape[1:]), kg, ig)
    out.backward(grad.view_as(out).to(out.dtype))


def _module_forward(module: nn.Module, x: Tensor, grad: Tensor, amp: bool) -> None:
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        module(x)


def _module_forward_backward(module: nn.Module, x: Tensor, grad: Tensor, amp: bool) -> None:
    xg = x.detach().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        out = module(xg)
    out.backward(grad.to(out.dtype))


def _setting(amp: bool, compiled: bool) -> str:
    return f"{' (bf16 autocast, channels_last)' if amp else ''}{', torch.compile' if compiled else ''}"


def _shapes(args: argparse.Namespace) -> list[tuple[int, int]]:
    scale = args.size / 224
    return [(channels, max(1, round(side * scale))) for channels, side in SHAPES]


def bench_aggregation(args: argparse.Namespace, device: torch.device, amp: bool, compiled: bool) -> None:
    names = list(AGGREGATIONS)
    aggs = {name: torch.compile(fn) if compiled else fn for name, fn in AGGREGATIONS.items()}
    print(
        f"\nTAM aggregation (Eq. 4) alone, K={args.kernel_size}, {args.segments} segments x batch "
        f"{args.batch}, device {device.type}{_setting(amp, compiled)}; ms, then grouped_conv time / each "
        "time, then shift_autograd time / shift time (> 1: the fused Function beats the plain ops)"
    )
    print(
        f"{'pass':>4} {'shape (NT,C,H,W)':>20} | "
        + " ".join(f"{n:>13}" for n in names)
        + " | "
        + " ".join(f"{'conv/' + n:>18}" for n in names[:-1])
        + f" | {'autograd/shift':>14}"
    )
    ratios: dict[str, dict[str, list[float]]] = {p: {n: [] for n in names} for p in ("fwd", "f+b")}
    nt = args.segments * args.batch
    for channels, side in _shapes(args):
        x, kernel, importance, grad = _layer_inputs(args, channels, side, device, amp)
        for pass_name, fn in (("fwd", _aggregate_forward), ("f+b", _aggregate_forward_backward)):
            times = {
                name: _time(
                    partial(fn, aggs[name], x, kernel, importance, grad, args.segments), args.repeats, device
                )
                for name in names
            }
            r = ratios[pass_name]
            for name in names[:-1]:
                r[name].append(times["grouped_conv"] / times[name])
            r["grouped_conv"].append(times["shift_autograd"] / times["shift"])  # slot reused: plain / fused
            print(
                f"{pass_name:>4} {str((nt, channels, side, side)):>20} | "
                + " ".join(f"{times[n] * 1e3:13.3f}" for n in names)
                + " | "
                + " ".join(f"{r[n][-1]:18.2f}" for n in names[:-1])
                + f" | {r['grouped_conv'][-1]:14.2f}"
            )
    for pass_name, r in ratios.items():
        print(
            f"geometric mean, {pass_name}: "
            + ", ".join(f"grouped_conv / {n} {_geomean(r[n]):.2f}x" for n in names[:-1])
            + f"; shift_autograd / shift {_geomean(r['grouped_conv']):.2f}x"
        )


def bench_tam(
    args: argparse.Namespace, device: torch.device, amp: bool, compiled: bool
) -> tuple[float, float]:
    print(
        f"\nTAM module, K={args.kernel_size}, {args.segments} segments x batch {args.batch}, "
        f"device {device.type}{_setting(amp, compiled)}"
    )
    print(
        f"{'shape (NT,C,H,W)':>22} | {'conv fwd ms':>11} {'shift fwd ms':>12} {'ratio':>6} | "
        f"{'conv f+b ms':>11} {'shift f+b ms':>12} {'ratio':>6}"
    )
    fwd_ratios, fb_ratios = [], []
    nt = args.segments * args.batch
    for channels, side in _shapes(args):
        torch.manual_seed(0)
        shift = TAM(channels, args.segments, kernel_size=args.kernel_size, aggregation="shift").to(device)
        conv = TAM(channels, args.segments, kernel_size=args.kernel_size, aggregation="grouped_conv").to(
            device
        )
        conv.load_state_dict(shift.state_dict())
        modules = (torch.compile(conv), torch.compile(shift)) if compiled else (conv, shift)
        x = torch.randn(nt, channels, side, side, device=device)
        if amp:
            x = x.to(memory_format=torch.channels_last)
        grad = torch.randn_like(x)
        results = []
        for fn in (_module_forward, _module_forward_backward):
            results.append(tuple(_time(partial(fn, m, x, grad, amp), args.repeats, device) for m in modules))
        (fc, fs), (bc, bs) = results
        fwd_ratios.append(fc / fs)
        fb_ratios.append(bc / bs)
        print(
            f"{str((nt, channels, side, side)):>22} | {fc * 1e3:11.2f} {fs * 1e3:12.2f} {fc / fs:6.2f} | "
            f"{bc * 1e3:11.2f} {bs * 1e3:12.2f} {bc / bs:6.2f}"
        )
    gf, gb = _geomean(fwd_ratios), _geomean(fb_ratios)
    print(
        f"geometric mean speed-up of the shifted sum over grouped conv: forward {gf:.2f}x (target > 1), "
        f"forward+backward {gb:.2f}x (target >= 1)"
    )
    return gf, gb


def bench_models(args: argparse.Namespace, device: torch.device, amp: bool) -> float:
    print(
        f"\nTraining step, R50 at {args.size} px, batch {args.model_batch} x {args.segments} frames, "
        f"device {device.type}{' (bf16 autocast, channels_last)' if amp else ''}"
    )
    x = torch.randn(args.model_batch, args.segments, 3, args.size, args.size, device=device)
    y = torch.randint(0, 400, (args.model_batch,), device=device)
    times = {}
    for arch in ("tsn", "tanet"):
        torch.manual_seed(0)
        cfg = ModelConfig(
            arch=arch,
            num_classes=400,
            num_segments=args.segments,
            backbone=BackboneConfig(depth=50, base_width=args.base_width),
            temporal_kwargs={"kernel_size": args.kernel_size} if arch == "tanet" else {},
        )
        model = build_model(cfg).to(device).train()
        if amp:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

        def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

        times[arch] = _time(step, args.repeats, device)
        clips_per_s = args.model_batch / times[arch]
        print(f"  {arch:6s} step {times[arch] * 1e3:9.1f} ms  ({clips_per_s:.2f} clips/s)")
        del model, opt
    ratio = times["tanet"] / times["tsn"]
    print(f"TANet / TSN step time: {ratio:.3f}x (target <= 1.35)")
    return ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=2, help="clips per TAM input (TAM part)")
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="input side; TAM shapes scale with it")
    p.add_argument("--kernel-size", type=int, default=3, help="TAM taps K (official 3)")
    p.add_argument("--model-batch", type=int, default=1, help="clips per training step (model part)")
    p.add_argument("--base-width", type=int, default=64, help="ResNet-50 width for the model part")
    p.add_argument("--compile", action="store_true", help="also time the TAM parts under torch.compile")
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--cpu-only", action="store_true", help="skip CUDA even when available")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    check_same_values(args.kernel_size)
    devices = [(torch.device("cpu"), False)]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append((torch.device("cuda"), True))
    for device, amp in devices:
        for compiled in (False, True) if args.compile else (False,):
            bench_aggregation(args, device, amp, compiled)
            bench_tam(args, device, amp, compiled)
        if not args.skip_models:
            bench_models(args, device, amp)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
