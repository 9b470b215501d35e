#!/usr/bin/env python3
"""Exported (onnxruntime) vs eager PyTorch throughput for TANet-R50 and GLTR-R50.

    python benchmarks/export.py                                   # both models, CPU, batch 1
    python benchmarks/export.py --device cuda                     # GPU: CUDAExecutionProvider vs eager CUDA
    python benchmarks/export.py --models tanet --repeats 2 --set model.backbone.depth=18 \\
        --set "data.input_size=[64,64]"                           # smoke run (seconds)

Models: the published configs (``configs/action/tanet_r50_kinetics400_8f.yaml``: 8 frames of 224 x 224;
``configs/reid/gltr_r50_mars.yaml``: 16 frames of 256 x 128) with random weights, exported by
``export_model`` exactly as ``tools/export.py`` does (ONNX through ``torch.export``, with the exporter's
graph optimisation) for ``--batch-size`` clips. The eager side is the same model in eval mode under
``torch.inference_mode``. Both sides get the same clip and the same number of threads (``--threads``,
default torch's), calls alternate one by one after ``--warmup`` untimed calls each, and the medians of
``--repeats`` timed calls give clips/s. The outputs are compared (max abs difference) as a sanity check.

Target: the exported model at least as fast as eager PyTorch on the CPU (ratio >= 1.0).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from video_attn.apis import export_model, onnx_session
from video_attn.apis.export import export_input_shape
from video_attn.config import load_config
from video_attn.models import build_model
from video_attn.tasks import build_task

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "tanet": REPO / "configs/action/tanet_r50_kinetics400_8f.yaml",
    "gltr": REPO / "configs/reid/gltr_r50_mars.yaml",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tanet,gltr", help="comma-separated: tanet, gltr")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=1, help="clips per call (fixed in the export)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per side first")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads, both sides (default torch's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every model (repeatable)")
    return p.parse_args()


def build(name: str, overrides: list[str]) -> tuple[torch.nn.Module, tuple[int, ...], str]:
    """The eval-mode model of a published config (random weights), its export input shape and output name."""
    cfg = load_config(CONFIGS[name], ["model.backbone.pretrained=null", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    output_name = "embeddings" if build_task(cfg).name == "reid" else "logits"
    return model, export_input_shape(cfg), output_name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, args: argparse.Namespace, device: torch.device, workdir: str) -> dict:
    model, shape, output_name = build(name, args.overrides)
    shape = (args.batch_size, *shape[1:])
    onnx_path = str(Path(workdir) / f"{name}.onnx")
    started = time.perf_counter()
    export_model(model, onnx_path, "onnx", shape, output_name=output_name)
    export_s = time.perf_counter() - started
    providers = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    session = onnx_session(onnx_path, num_threads=torch.get_num_threads(), providers=providers)
    if session.get_providers()[0] != providers[0]:
        raise SystemExit(f"onnxruntime has no {providers[0]} here (--device cuda needs onnxruntime-gpu)")
    clip = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    clip_np = clip.numpy()
    model = model.to(device)
    clip_dev = clip.to(device)

    def eager() -> np.ndarray:
        with torch.inference_mode():
            out = model(clip_dev)
        sync(device)
        return out.float().cpu().numpy()

    def exported() -> np.ndarray:
        (out,) = session.run(None, {"clips": clip_np})
        return out

    for _ in range(args.warmup):
        eager()
        exported()
    times: dict[str, list[float]] = {"eager": [], "onnx": []}
    for _ in range(args.repeats):
        for side, call in (("eager", eager), ("onnx", exported)):
            started = time.perf_counter()
            out = call()
            times[side].append(time.perf_counter() - started)
            if side == "eager":
                eager_out = out
            else:
                onnx_out = out
    eager_s, onnx_s = statistics.median(times["eager"]), statistics.median(times["onnx"])
    return {
        "model": name, "input": shape, "export_s": export_s,
        "diff": float(np.abs(eager_out - onnx_out).max()),
        "eager": args.batch_size / eager_s, "onnx": args.batch_size / onnx_s, "ratio": eager_s / onnx_s,
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("skipped: --device cuda but no CUDA device is available")
        return
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; valid: {', '.join(CONFIGS)}")
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, device {device}, "
          f"{torch.get_num_threads()} threads, {args.repeats} timed calls per side (median)")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            rows.append(measure(name, args, device, workdir))
    print("\n| model | input (N, T, 3, H, W) | export (s) | max abs diff | eager clips/s "
          "| onnxruntime clips/s | onnxruntime / eager |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        verdict = (" (met)" if r["ratio"] >= 1.0 else " (missed)") if device.type == "cpu" else ""
        print(f"| {r['model']} | {tuple(r['input'])} | {r['export_s']:.1f} | {r['diff']:.1e} "
              f"| {r['eager']:.2f} | {r['onnx']:.2f} | {r['ratio']:.2f}x{verdict} |")


if __name__ == "__main__":
    main()
