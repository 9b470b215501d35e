"""Per-example kernels of CondConv / DynamicConv: one grouped conv over the batch (library path) vs a
Python loop over examples (the literal reading of the papers), plus each 3x3 replacement's cost relative to
a plain ``nn.Conv2d``, at ResNet-50 3x3-conv shapes (frames of a video clip form the batch).

    python benchmarks/bench_conv_attention.py [--batch 8] [--repeats 5] [--threads 2] [--size 112]

``--size`` is the input resolution whose ResNet-50 stage shapes are used (224 gives 56/28/14/7 maps).
Prints a table and the ratios; both sides run in the same process, interleaved.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from video_attn.models.attention import create_conv
from video_attn.models.attention.cond_conv import CondConv2d


def per_sample_loop(m: CondConv2d, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Reference path: a separate conv per example with its own mixed kernel."""
    weight = m.weight.view(m.num_experts, *m.weight_shape)
    outs = []
    for i in range(x.shape[0]):
        w = (mix[i].view(-1, 1, 1, 1, 1) * weight).sum(0)
        outs.append(F.conv2d(x[i : i + 1], w, None, m.stride, m.padding, m.dilation, m.groups))
    return torch.cat(outs)


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="frames per batch (N*T)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=112, help="input resolution (224 = ImageNet shapes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"load average: {os.getloadavg()}, threads {args.threads}, batch {args.batch}, size {args.size}")

    stages = [(64, args.size // 4), (128, args.size // 8), (256, args.size // 16), (512, args.size // 32)]
    print("\n1) CondConv per-example kernels: grouped conv vs loop (forward, best of repeats)")
    print(f"{'channels':>8} {'map':>4} {'grouped ms':>11} {'loop ms':>9} {'loop/grouped':>13}")
    ratios = []
    with torch.no_grad():
        for c, hw in stages:
            m = CondConv2d(c, c, num_experts=4)
            x = torch.randn(args.batch, c, hw, hw)
            mix = m.routing(x)
            torch.testing.assert_close(m(x, mix), per_sample_loop(m, x, mix), atol=1e-4, rtol=1e-4)
            t_grouped = timeit(lambda m=m, x=x, mix=mix: m(x, mix), args.repeats)
            t_loop = timeit(lambda m=m, x=x, mix=mix: per_sample_loop(m, x, mix), args.repeats)
            ratios.append(t_loop / t_grouped)
            print(f"{c:>8} {hw:>4} {t_grouped * 1e3:>11.2f} {t_loop * 1e3:>9.2f} {t_loop / t_grouped:>13.2f}")
    geo = torch.tensor(ratios).log().mean().exp().item()
    print(f"geometric mean loop/grouped: {geo:.2f}x")

    print("\n2) Forward + backward of each 3x3 replacement relative to nn.Conv2d (sum over the 4 shapes)")
    options = {"gsa": {"max_size": max(64, args.size // 4)}}
    names = ["none", "sk", "splat", "condconv", "dynamic", "gsa"]
    totals = dict.fromkeys(names, 0.0)
    for c, hw in stages:
        x = torch.randn(args.batch, c, hw, hw)
        for name in names:
            m = create_conv(name, c, c, 3, **options.get(name, {})).train()

            def step(m: nn.Module = m, x: torch.Tensor = x) -> None:
                m.zero_grad(set_to_none=True)
                m(x).square().mean().backward()

            totals[name] += timeit(step, args.repeats)
    print(f"{'conv':>9} {'ms':>9} {'x plain':>8}")
    for name in names:
        print(f"{name:>9} {totals[name] * 1e3:>9.2f} {totals[name] / totals['none']:>8.2f}")


if __name__ == "__main__":
    main()
