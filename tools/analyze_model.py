#!/usr/bin/env python3
"""What a model costs: parameters, multiply-adds per view and per video, where they go, latency.

    python tools/analyze_model.py CONFIG [--views N] [--input-size H W] [--no-latency] [--compile]
                                  [--device auto] [--batch-size 1] [--json OUT.json] [KEY=VALUE ...]

Counts are MACs (multiply-accumulates), the unit papers report as "FLOPs" (ResNet-50: 4.1 G per 224 px
frame); torch.utils.flop_counter counts 2 FLOPs per MAC. A view is one clip of the config's test protocol
(frames, crop size); views per video = clips x crops of the evaluated split (or --views). The tables give
parameters and MACs per stage and per type of attention / temporal module, and the plain ResNet (TSN) the
modules are added to. Latency: the forward time of --batch-size views on --device (eager; --compile adds
torch.compile), the median of --repeats calls after --warmup calls. No checkpoint is needed (random weights
have the same cost). Exit status 0; 1 after a one-line error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from _cli import load_cli_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Parameters, multiply-adds and latency of a video_attn model.")
    p.add_argument("config", help="path to a YAML config")
    p.add_argument("--views", type=int, default=None,
                   help="views per video (default: clips x crops of the config's test protocol)")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="view size (default: the test crop size of the config)")
    p.add_argument("--no-latency", action="store_true", help="count only, do not time the model")
    p.add_argument("--compile", action="store_true", help="also time the torch.compile'd model")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=1, help="views per timed call (default 1)")
    p.add_argument("--warmup", type=int, default=3, help="calls before timing (default 3)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls; the median is reported (default 10)")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    args = p.parse_intermixed_args(argv)
    if args.views is not None and args.views < 1:
        p.error("--views must be >= 1")
    if args.input_size is not None and min(args.input_size) < 1:
        p.error("--input-size takes two positive numbers H W")
    if min(args.batch_size, args.warmup, args.repeats) < 1:
        p.error("--batch-size, --warmup and --repeats must be >= 1")
    if args.compile and args.no_latency:
        p.error("--compile times the compiled model; it cannot go with --no-latency")
    return args


def human(value: float) -> str:
    """``value`` with a K / M / G / T suffix (3 significant digits at least)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def table(headers: list[str], rows: list[list[Any]], text_columns: tuple[int, ...] = (0,)) -> str:
    """Rows under headers: ``text_columns`` left-aligned, the other (numeric) columns right-aligned."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [
            cell.ljust(width) if i in text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  " + "  ".join(padded).rstrip())
    return "\n".join(lines)


def report(cost: Any) -> str:
    """The readable report of a :class:`video_attn.apis.ModelCost`."""
    t, _, h, w = cost.view_shape
    total_macs = cost.macs_per_view
    share = lambda macs: f"{100.0 * macs / total_macs:.1f}%" if total_macs else "-"
    out = [
        f"model: {cost.arch} ({cost.task}); view: {t} frames of {h}x{w}; views per video: "
        f"{cost.views if cost.views is not None else 'variable'} ({cost.views_source})",
        f"parameters: {cost.params:,} ({human(cost.params)}), trainable {cost.trainable_params:,}",
        "multiply-adds (MACs, the papers' 'FLOPs'; FLOPs = 2 x MACs):",
        f"  per view   {human(total_macs)}  ({total_macs:,})",
        f"  per frame  {human(cost.macs_per_frame)}",
    ]
    if cost.macs_per_video is not None:
        plural = "" if cost.views == 1 else "s"
        out.append(f"  per video  {human(cost.macs_per_video)}  ({cost.views} view{plural})")
    else:
        out.append("  per video  variable (whole tracklets: per frame x frames)")
    out += ["", "per part:"]
    out.append(table(
        ["part", "params", "MACs/view", "share"],
        [[r.name, human(r.params), human(r.macs), share(r.macs)] for r in cost.stages],
    ))
    if cost.modules:
        out += ["", "per module type (all instances):"]
        out.append(table(
            ["module", "count", "params", "MACs/view", "share", "role"],
            [[r.name, r.count, human(r.params), human(r.macs), share(r.macs), r.note] for r in cost.modules],
            text_columns=(0, 5),
        ))
    if cost.plain is not None:
        added_params, added_macs = cost.params - cost.plain.params, total_macs - cost.plain.macs
        base = cost.plain.macs or 1
        out += [
            "",
            f"{cost.plain.name}: {human(cost.plain.params)} params, {human(cost.plain.macs)} MACs/view; "
            f"the modules add {human(added_params)} params and {human(added_macs)} MACs/view "
            f"({100.0 * added_macs / base:+.2f}%)",
        ]
    if cost.latency:
        out += ["", "latency (inference mode, fp32, random input):"]
        out.append(table(
            ["mode", "device", "batch", "median ms", "min ms", "clips/s", "frames/s", "compile s"],
            [
                [
                    lat.mode, lat.device, lat.batch_size, f"{lat.median_ms:.2f}", f"{lat.min_ms:.2f}",
                    f"{lat.clips_per_s:.2f}", f"{lat.frames_per_s:.1f}",
                    "-" if lat.compile_s is None else f"{lat.compile_s:.1f}",
                ]
                for lat in cost.latency
            ],
            text_columns=(0, 1),
        ))
    out += ["", *[f"note: {n}" for n in cost.notes]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_cli_config(args.config, args.overrides)
    if cfg is None:
        return 1
    from video_attn.apis import analyze_model
    from video_attn.engine.checkpoint import write_json_atomic

    try:
        cost = analyze_model(
            cfg,
            views=args.views,
            input_size=args.input_size,
            latency=not args.no_latency,
            compile=args.compile,
            device=args.device,
            batch_size=args.batch_size,
            warmup=args.warmup,
            repeats=args.repeats,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report(cost))
    if args.json:
        write_json_atomic(args.json, {"config": args.config, "overrides": args.overrides, **cost.to_dict()})
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
