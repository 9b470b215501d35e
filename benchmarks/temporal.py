#!/usr/bin/env python3
"""TAM aggregation speed (shifted sum vs the official grouped conv) and TANet-R50 vs TSN-R50 step time.

    python benchmarks/temporal.py [--repeats 5] [--batch 2] [--segments 8] [--size 224] [--skip-models]

Part 1: the whole TAM module on the four TANet-R50 layer shapes (8 segments x batch 2 at 224 px; TAM sits on
the bottleneck width after conv1): (16, 64, 56, 56), (16, 128, 28, 28), (16, 256, 14, 14), (16, 512, 7, 7).
Both sides share the global and local branches; only the aggregation differs. Forward (no grad) and
forward + backward, median of ``--repeats`` after a warm-up, geometric mean over the shapes.
Targets: shifted sum >= 2x faster than grouped conv in forward, and not slower in forward + backward.

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
from functools import partial

import torch
from torch import nn

from video_attn.config.schema import BackboneConfig, ModelConfig
from video_attn.models import build_model
from video_attn.models.temporal.tam import TAM

SHAPES = [(64, 56), (128, 28), (256, 14), (512, 7)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
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


def _tam_forward(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, amp: bool) -> None:
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        module(x)


def _tam_forward_backward(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, amp: bool) -> None:
    xg = x.detach().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        out = module(xg)
    out.backward(grad.to(out.dtype))


def bench_tam(args: argparse.Namespace, device: torch.device, amp: bool) -> tuple[float, float]:
    print(
        f"\nTAM module, {args.segments} segments x batch {args.batch}, device {device.type}"
        f"{' (bf16 autocast, channels_last)' if amp else ''}"
    )
    print(
        f"{'shape (NT,C,H,W)':>22} | {'conv fwd ms':>11} {'shift fwd ms':>12} {'ratio':>6} | "
        f"{'conv f+b ms':>11} {'shift f+b ms':>12} {'ratio':>6}"
    )
    fwd_ratios, fb_ratios = [], []
    nt = args.segments * args.batch
    scale = args.size / 224
    for channels, side in SHAPES:
        side = max(1, round(side * scale))
        torch.manual_seed(0)
        shift = TAM(channels, args.segments, aggregation="shift").to(device)
        conv = TAM(channels, args.segments, aggregation="grouped_conv").to(device)
        conv.load_state_dict(shift.state_dict())
        x = torch.randn(nt, channels, side, side, device=device)
        if amp:
            x = x.to(memory_format=torch.channels_last)
        grad = torch.randn_like(x)
        results = []
        for fn in (_tam_forward, _tam_forward_backward):
            t_conv = _time(partial(fn, conv, x, grad, amp), args.repeats, device)
            t_shift = _time(partial(fn, shift, x, grad, amp), args.repeats, device)
            results.append((t_conv, t_shift))
        (fc, fs), (bc, bs) = results
        fwd_ratios.append(fc / fs)
        fb_ratios.append(bc / bs)
        print(
            f"{str((nt, channels, side, side)):>22} | {fc * 1e3:11.2f} {fs * 1e3:12.2f} {fc / fs:6.2f} | "
            f"{bc * 1e3:11.2f} {bs * 1e3:12.2f} {bc / bs:6.2f}"
        )
    gf, gb = _geomean(fwd_ratios), _geomean(fb_ratios)
    print(
        f"geometric mean speed-up of the shifted sum: forward {gf:.2f}x (target >= 2), "
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
    p.add_argument("--model-batch", type=int, default=1, help="clips per training step (model part)")
    p.add_argument("--base-width", type=int, default=64, help="ResNet-50 width for the model part")
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    devices = [(torch.device("cpu"), False)]
    if torch.cuda.is_available():
        devices.append((torch.device("cuda"), True))
    for device, amp in devices:
        bench_tam(args, device, amp)
        if not args.skip_models:
            bench_models(args, device, amp)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
