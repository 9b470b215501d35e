#!/usr/bin/env python3
"""See inside a trained model: its attention maps and weights on one video (or ReID tracklet), and Grad-CAM.

    python tools/visualize.py CONFIG --checkpoint CKPT VIDEO_OR_TRACKLET --out DIR [--layers PATH ...]
                              [--target CLASS] [--cam-layer PATH] [--device auto] [--dpi 200] [KEY=VALUE ...]

The model sees the first test clip of the input (the evaluated split's frame sampler; the centre crop where
the split has several; a ReID tracklet gives model.num_segments frames spread over it). One forward pass is
recorded (video_attn.models.attention_capture) and DIR receives, each written only when the model has such
modules:

    attention_grid.png     frames x layers: spatial attention maps (CBAM / SA spatial gates, GSA key
                           attention, Residual Attention masks; channel-averaged) over the sampled frames
    gradcam.png            Grad-CAM per frame for the predicted (or --target) class on --cam-layer (action)
    tam_kernels.png        TAM's per-clip temporal kernels (global branch), mean and spread over channels
    tam_importance.png     TAM's per-frame importance (local branch), mean over channels, per block
    channel_weights.png    distribution of the channel weights (SE, ECA, CBAM / SA channel gates) per stage
    branch_weights.png     mean branch / expert weights (SK, split attention, CondConv, Dynamic Conv;
                           Highway: per channel)
    temporal_attention.png ReID: GLTR's temporal self-attention between the tracklet's frames
    index.html             everything on one page, with the prediction and the list of recorded modules

--layers keeps the records whose module path starts with one of the given paths (e.g. backbone.layer3).
Exit status 0; 1 after a one-line error (bad input, missing grad-cam package: pip install -e ".[visualize]").
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from _cli import load_cli_config

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
STAGE = re.compile(r"(layer\d+)")
MAX_PANELS = 24  # branch-weight panels per figure; more would be unreadable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Attention maps, TAM kernels, channel / branch weights and Grad-CAM of one video.",
        epilog="Example: python tools/visualize.py configs/synthetic/tanet_r18.yaml --checkpoint "
        "work_dirs/synthetic/tanet_r18/checkpoints/best.pt data/synthetic_action/videos/val_00000.mp4 "
        "--out vis/",
    )
    p.add_argument("paths", nargs="+", metavar="CONFIG INPUT [KEY=VALUE ...]",
                   help="config, video / frame folder / tracklet folder, dotted overrides")
    p.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) of tools/train.py")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--layers", nargs="+", default=None, metavar="PATH",
                   help="only records under these module paths (e.g. backbone.layer3); default all")
    p.add_argument("--target", default=None,
                   help="Grad-CAM class (name or index); default: the predicted one")
    p.add_argument("--cam-layer", default=None,
                   help="module path for Grad-CAM (default: the backbone's last stage, e.g. backbone.layer4)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
    p.add_argument("--dpi", type=int, default=200, help="resolution of the PNGs (default 200)")
    args = p.parse_intermixed_args(argv)
    args.overrides = [a for a in args.paths if OVERRIDE.match(a) and not os.path.exists(a)]
    paths = [a for a in args.paths if a not in args.overrides]
    if len(paths) != 2:
        p.error(f"expected CONFIG INPUT, got {len(paths)} paths: {' '.join(paths)}")
    args.config, args.input = paths
    return args


def error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------- helpers
def short(path: str) -> str:
    """A record path without the leading ``backbone.``, for titles."""
    return path.removeprefix("backbone.")


def stage_of(path: str) -> str:
    """``layer3`` for ``backbone.layer3.1.attn.channel``; the first component otherwise."""
    found = STAGE.search(path)
    return found.group(1) if found else path.split(".")[0]


def spatial_maps(value: Any, size: tuple[int, int]) -> Any:
    """(N, T, C, h, w) record -> (T, H, W) map of the first clip: mean over C, bilinear to the frame size."""
    import torch.nn.functional as F

    maps = value[0].float().mean(dim=1, keepdim=True)  # (T, 1, h, w)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def resolve_target(target: str | None, class_names: list[str]) -> int | None:
    if target is None:
        return None
    if target in class_names:
        return class_names.index(target)
    if target.isdigit() and int(target) < len(class_names):
        return int(target)
    raise ValueError(f"--target {target!r} is not a class name or index; classes: {', '.join(class_names)}")


def save(fig: Any, out: Path, name: str, dpi: int) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(out / name, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return name


# ----------------------------------------------------------------------------------------- figures
def grid_figure(frames: Any, columns: list[tuple[str, Any]], indices: Any) -> Any:
    """Rows: frames; first column the frame, then one overlaid map per column (per-column colour scale)."""
    import matplotlib.pyplot as plt

    rows, cols = len(frames), 1 + len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows), squeeze=False)
    for c, (title, maps) in enumerate([("frame", None), *columns]):
        low, high = (0.0, 1.0) if maps is None else (float(maps.min()), float(maps.max()))
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(frames[r])
            if maps is not None:
                ax.imshow(maps[r], cmap="jet", alpha=0.5, vmin=low, vmax=high + 1e-12)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=6)
            if c == 0:
                ax.set_ylabel(f"frame {int(indices[r])}", fontsize=6)
    fig.tight_layout(pad=0.2)
    return fig


def tam_kernel_figure(records: dict[str, Any]) -> Any:
    """One panel per stage: each block's kernel taps, mean over channels, with the channels' spread."""
    import matplotlib.pyplot as plt
    import numpy as np

    by_stage = defaultdict(list)
    for path, rec in records.items():
        by_stage[stage_of(path)].append((path, rec.value[0].float().numpy()))  # (C, K)
    fig, axes = plt.subplots(1, len(by_stage), figsize=(3 * len(by_stage), 2.6), squeeze=False)
    for ax, (stage, items) in zip(axes[0], by_stage.items()):
        for path, kernel in items:
            taps = np.arange(kernel.shape[1]) - kernel.shape[1] // 2
            mean, std = kernel.mean(0), kernel.std(0)
            label = short(path).removesuffix(".kernel")
            ax.errorbar(taps, mean, yerr=std, marker="o", capsize=2, label=label)
        ax.set_title(f"TAM kernels, {stage}", fontsize=8)
        ax.set_xlabel("tap (frame offset)", fontsize=7)
        ax.set_ylabel("weight (mean ± std over channels)", fontsize=7)
        ax.legend(fontsize=5)
    fig.tight_layout()
    return fig


def tam_importance_figure(records: dict[str, Any], indices: Any) -> Any:
    """One panel per stage: each block's frame importance, mean over channels."""
    import matplotlib.pyplot as plt

    by_stage = defaultdict(list)
    for path, rec in records.items():
        by_stage[stage_of(path)].append((path, rec.value[0].float().mean(0).numpy()))  # (T,)
    fig, axes = plt.subplots(1, len(by_stage), figsize=(3 * len(by_stage), 2.6), squeeze=False)
    for ax, (stage, items) in zip(axes[0], by_stage.items()):
        for path, importance in items:
            label = short(path).removesuffix(".importance")
            ax.plot(range(len(importance)), importance, marker="o", label=label)
        ax.set_xticks(range(len(indices)), [str(int(i)) for i in indices], fontsize=6)
        ax.set_title(f"TAM frame importance, {stage}", fontsize=8)
        ax.set_xlabel("sampled frame", fontsize=7)
        ax.set_ylabel("importance (mean over channels)", fontsize=7)
        ax.legend(fontsize=5)
    fig.tight_layout()
    return fig


def channel_figure(records: dict[str, Any]) -> Any:
    """Histogram of all channel weights (over frames and channels) of each stage."""
    import matplotlib.pyplot as plt
    import numpy as np

    by_stage = defaultdict(list)
    for path, rec in records.items():
        by_stage[stage_of(path)].append(rec.value[0].float().flatten().numpy())
    fig, axes = plt.subplots(1, len(by_stage), figsize=(2.8 * len(by_stage), 2.4), squeeze=False)
    for ax, (stage, values) in zip(axes[0], by_stage.items()):
        ax.hist(np.concatenate(values), bins=40, range=(0, 1), color="tab:blue")
        ax.set_title(f"channel weights, {stage} ({len(values)} gates)", fontsize=8)
        ax.set_xlabel("weight", fontsize=7)
    fig.tight_layout()
    return fig


def branch_figure(records: dict[str, Any]) -> Any:
    """One panel per record: the mean weight of each branch (axis 2 of the record), over frames and the
    rest."""
    import matplotlib.pyplot as plt

    items = list(records.items())[:MAX_PANELS]
    cols = min(4, len(items))
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows), squeeze=False)
    for ax in axes.flat[len(items) :]:
        ax.axis("off")
    for ax, (path, rec) in zip(axes.flat, items):
        value = rec.value[0].float()  # (T, M, ...)
        dims = [d for d in range(value.dim()) if d != 1]
        weights = value.mean(dim=dims).numpy()
        ax.bar(range(len(weights)), weights, color="tab:orange")
        ax.set_title(f"{short(path)} ({rec.module})", fontsize=6)
        ax.set_xlabel("channel" if rec.module == "Highway" else "branch", fontsize=6)
        ax.tick_params(labelsize=5)
    fig.tight_layout()
    return fig


def temporal_attention_figure(records: dict[str, Any], frames: Any, indices: Any) -> Any:
    """ReID: per record, the attention matrix (T x T) or weights (T), and the attention each frame
    receives above the frames themselves."""
    import matplotlib.pyplot as plt

    items = list(records.items())
    t = len(frames)
    fig = plt.figure(figsize=(max(6.0, 0.8 * t), 3.2 * len(items) + 1.2))
    grid = fig.add_gridspec(2 * len(items) + 1, t, height_ratios=[3, 1.2] * len(items) + [1.4])
    for i, (path, rec) in enumerate(items):
        value = rec.value[0].float().numpy()
        # (T,): the column means of a row-stochastic matrix, or the pooling weights themselves
        received = value.mean(0) if value.ndim == 2 else value
        if value.ndim == 2:
            ax = fig.add_subplot(grid[2 * i, : t // 2 or 1])
            im = ax.imshow(value, cmap="viridis")
            ax.set_title(f"{path}: attention (row: query frame)", fontsize=7)
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax = fig.add_subplot(grid[2 * i + 1, :])
        ax.bar(range(t), received, color="tab:green")
        ax.set_xlim(-0.5, t - 0.5)
        ax.set_xticks(range(t), [str(int(j)) for j in indices], fontsize=6)
        ax.set_ylabel("attention received", fontsize=6)
    for j in range(t):
        ax = fig.add_subplot(grid[-1, j])
        ax.imshow(frames[j])
        ax.axis("off")
    return fig


def gradcam_figure(frames: Any, cams: Any, indices: Any, title: str) -> Any:
    import matplotlib.pyplot as plt

    t = len(frames)
    fig, axes = plt.subplots(2, t, figsize=(1.3 * t, 2.9), squeeze=False)
    for j in range(t):
        axes[0][j].imshow(frames[j])
        axes[1][j].imshow(frames[j])
        axes[1][j].imshow(cams[j], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[0][j].set_title(f"frame {int(indices[j])}", fontsize=6)
        for ax in (axes[0][j], axes[1][j]):
            ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.2)
    return fig


# -------------------------------------------------------------------------------------------- page
def write_index(
    out: Path, sections: list[tuple[str, str, str]], info: list[str], table: list[list[str]]
) -> None:
    """``index.html``: a header, one section per figure (title, file, what it shows), the records table."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>video_attn: inside the model</title>",
        "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}img{max-width:100%}"
        "td,th{padding:2px 8px;text-align:left;font-size:12px}</style></head><body>",
        "<h1>Inside the model</h1>",
        "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in info) + "</ul>",
    ]
    for title, name, text in sections:
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>")
        link, alt = html.escape(name), html.escape(title)
        parts.append(f"<a href='{link}'><img src='{link}' alt='{alt}'></a>")
    parts.append("<h2>Recorded modules</h2><table><tr><th>module path</th><th>module</th><th>kind</th>"
                 "<th>shape</th></tr>")
    parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table]
    parts.append("</table></body></html>")
    (out / "index.html").write_text("\n".join(parts), encoding="utf-8")


# -------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.path.exists(args.input):
        return error(f"{args.input}: no such video file, frame folder or tracklet folder")
    cfg = load_cli_config(args.config, args.overrides, args.checkpoint)
    if cfg is None:
        return 1
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from video_attn.apis import load_model
    from video_attn.apis.gradcam import GRADCAM_MISSING, frame_gradcam
    from video_attn.apis.visual_clip import load_visual_clip
    from video_attn.data.decoders import DecodeError
    from video_attn.engine.checkpoint import CheckpointError
    from video_attn.engine.logger import setup_logging
    from video_attn.models.attention_capture import AttentionRecorder
    from video_attn.tasks import build_task

    setup_logging(None, level=logging.WARNING)  # the console shows warnings and the tool's own lines

    action = build_task(cfg).name == "action"
    if action:
        try:
            import pytorch_grad_cam  # noqa: F401
        except ImportError:
            return error(GRADCAM_MISSING)
    try:
        model = load_model(cfg, args.checkpoint, device=args.device)
        target = resolve_target(args.target, model.class_names) if action else None
        visual = load_visual_clip(model.cfg, args.input)
    except (CheckpointError, DecodeError, ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
        return error(str(exc))
    if args.target is not None and not action:
        return error("--target names a class of an action model; this is a ReID model")
    cam_layer = args.cam_layer or f"backbone.layer{len(model.backbone.stages)}"
    try:
        model.get_submodule(cam_layer)
    except AttributeError:
        return error(f"--cam-layer {cam_layer}: no such module in {type(model).__name__}")

    device = next(model.parameters()).device
    clip = visual.clip[None].to(device)
    t = clip.shape[1]
    with torch.no_grad(), AttentionRecorder(model, num_segments=t, include=args.layers) as recorder:
        output = model(clip)
    records = recorder.records
    if args.layers and not records:
        return error(f"--layers {' '.join(args.layers)}: no attention module under these paths; recorded "
                     f"paths: {', '.join(AttentionRecorder(model).paths) or 'none'}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, indices, size = visual.frames, visual.indices, tuple(visual.frames.shape[1:3])
    kind = lambda k: {p: r for p, r in records.items() if r.kind == k}
    sections: list[tuple[str, str, str]] = []
    info = [f"config: {args.config}", f"checkpoint: {args.checkpoint}",
            f"input: {args.input} ({visual.num_frames} frames; sampled {', '.join(map(str, indices))})"]

    def add(title: str, name: str, fig: Any, text: str) -> None:
        sections.append((title, save(fig, out, name, args.dpi), text))

    if action:
        probs = output.float().softmax(-1)[0]
        top = int(probs.argmax())
        info.append(f"prediction: {model.class_names[top]} ({float(probs[top]):.3f})")
        cams, classes = frame_gradcam(model, visual.clip, cam_layer, target)
        title = (f"Grad-CAM on {cam_layer}, class {model.class_names[classes[0]]} "
                 f"(p = {float(probs[classes[0]]):.3f})")
        add("Grad-CAM per frame", "gradcam.png", gradcam_figure(frames, cams[0], indices, title),
            f"{title}: where each frame's features raise the class score (each frame scaled to [0, 1]; top: "
            "the frames).")
    if kind("spatial"):
        columns = [(short(p), spatial_maps(r.value, size)) for p, r in kind("spatial").items()]
        add("Spatial attention", "attention_grid.png", grid_figure(frames, columns, indices),
            "Rows: sampled frames; columns: spatial maps (mean over their channels), one colour scale per "
            "column, so frames compare within a column.")
    if kind("temporal_kernel"):
        add("TAM kernels", "tam_kernels.png", tam_kernel_figure(kind("temporal_kernel")),
            "The temporal kernel TAM's global branch chose for this clip, per block: the weight of each "
            "frame offset (softmax over taps), mean and spread over channels.")
    if kind("temporal_importance"):
        add("TAM frame importance", "tam_importance.png",
            tam_importance_figure(kind("temporal_importance"), indices),
            "TAM's local branch: the importance (sigmoid) of each sampled frame, mean over channels, per "
            "block.")
    if kind("channel"):
        add("Channel weights", "channel_weights.png", channel_figure(kind("channel")),
            "Distribution of the channel gates' weights over frames and channels, per stage.")
    if kind("branch"):
        add("Branch weights", "branch_weights.png", branch_figure(kind("branch")),
            "Mean weight of each branch / expert / kernel (Highway: the transform gate of each channel), "
            f"over frames and positions (first {MAX_PANELS} modules).")
    if kind("temporal_attention"):
        add("Temporal attention", "temporal_attention.png",
            temporal_attention_figure(kind("temporal_attention"), frames, indices),
            "Attention between the tracklet's frames (row: the frame attending) and the mean attention each "
            "frame receives, above the frames.")
    table = [[p, r.module, r.kind, "x".join(map(str, r.value.shape))] for p, r in records.items()]
    write_index(out, sections, info, table)
    print(f"wrote {out / 'index.html'} ({len(sections)} figures, {len(records)} recorded modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
