#!/usr/bin/env python3
"""Training-step benchmark: data time vs step time and clips/s of TANet-R50 8x224 through the real pipeline.

Generates short H.264 videos (340x256, 64 frames, PyAV/libx264), then trains on them with the real
builders (video_list dataset, TSN 8-segment sampling, multi-scale crop to 224, flip, DataLoader with the
default ``data.num_workers``) and the engine's :class:`~video_attn.engine.trainer.Trainer`, once in fp32 and,
on CUDA, once with AMP; the same run reports both and the AMP / fp32 throughput ratio.

Targets (GPU): data time < 5% of the step time with the default workers; AMP >= 1.8x fp32 clips/s.
On CPU the numbers are only recorded (use --steps to keep the run short).

    python benchmarks/train_step.py                    # auto device; CPU: 3 steps of batch 2
    python benchmarks/train_step.py --steps 30 --batch-size 8 --amp-dtype bfloat16   # GPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 30 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (default: 5 CUDA, 1 CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per step (default: 8 CUDA, 2 CPU)")
    p.add_argument(
        "--num-workers", type=int, default=None, help="default: the config default (data.num_workers)"
    )
    p.add_argument("--depth", type=int, default=50, choices=[18, 34, 50, 101])
    p.add_argument("--size", type=int, default=224, help="crop size")
    p.add_argument("--segments", type=int, default=8)
    p.add_argument("--amp-dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--num-videos", type=int, default=16, help="distinct generated videos (list repeats them)")
    return p.parse_args()


def make_videos(out: Path, num_videos: int, frames: int = 64, height: int = 256, width: int = 340) -> Path:
    """Textured moving-noise videos; list file ``train.txt`` of ``videos/N.mp4 label`` lines."""
    from video_attn.data.synthetic.action import write_h264

    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(num_videos):
        base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        base = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
        clip = np.stack([np.roll(base, 3 * t, axis=1) for t in range(frames)])
        write_h264(out / "videos" / f"{i}.mp4", clip, gop=12, preset="veryfast")
    return out


def run(
    args: argparse.Namespace, root: Path, device: torch.device, amp: bool, steps: int, warmup: int, batch: int
) -> dict[str, float]:
    from video_attn.apis import amp_dtype_for, build_model_on
    from video_attn.config.loader import build_section
    from video_attn.config.schema import Config
    from video_attn.engine.hooks import HookBase
    from video_attn.engine.lr_scheduler import build_scheduler
    from video_attn.engine.optim import build_optimizer
    from video_attn.engine.trainer import Trainer
    from video_attn.tasks import build_task

    total = warmup + steps
    lines = [f"videos/{i % args.num_videos}.mp4 {i % 10}" for i in range(total * batch)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    data = {
        "format": "video_list",
        "root": str(root),
        "train": {"ann_file": "train.txt"},
        "input_size": [args.size, args.size],
    }
    if args.num_workers is not None:
        data["num_workers"] = args.num_workers
    cfg = build_section(
        Config,
        {
            "work_dir": str(root / "work"),
            "device": device.type,
            "model": {
                "arch": "tanet",
                "num_classes": 10,
                "num_segments": args.segments,
                "backbone": {"depth": args.depth},
            },
            "data": data,
            "train": {
                "epochs": 1,
                "batch_size": batch,
                "amp": amp,
                "amp_dtype": args.amp_dtype,
                "channels_last": args.channels_last,
                "log_every_iters": 10**6,
            },
        },
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = build_model_on(cfg, device)
    task = build_task(cfg)
    loader = task.build_train_loader(task.build_dataset("train"), pin_memory=device.type == "cuda")
    opt = build_optimizer(model, cfg.train)
    loss_fn, _ = task.build_loss(model, device)
    trainer = Trainer(
        model,
        opt,
        build_scheduler(opt, cfg.train, len(loader)),
        loader,
        loss_fn,
        root / "work",
        1,
        device=device,
        amp_dtype=amp_dtype_for(cfg, device),
        clip_grad=cfg.train.clip_grad,
        handle_sigint=False,
    )
    times: list[tuple[float, float]] = []

    class Record(HookBase):
        name = "record_step_times"

        def after_step(self) -> None:
            if self.trainer.iter > warmup:
                step = self.trainer.last_step
                times.append((step.data_time, step.step_time))

    trainer.register_hooks([Record()])
    start = time.perf_counter()
    trainer.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    data_t = sum(t[0] for t in times)
    step_t = sum(t[1] for t in times)
    return {
        "workers": cfg.data.num_workers,
        "step_s": statistics.median(t[1] for t in times),
        "data_frac": data_t / step_t,
        "clips_per_s": batch * len(times) / step_t,
        "wall_s": wall,
    }


def main() -> None:
    args = parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    cuda = device.type == "cuda"
    steps = args.steps or (30 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    batch = args.batch_size or (8 if cuda else 2)
    load = os.getloadavg()[0]
    print(
        f"device {device}{' ' + torch.cuda.get_device_name() if cuda else ''}, TANet-R{args.depth} "
        f"{args.segments}x{args.size}, batch {batch}, {steps} timed steps after {warmup}, load {load:.2f}"
    )
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        root = make_videos(Path(tmp), args.num_videos)
        results = {"fp32": run(args, root, device, False, steps, warmup, batch)}
        if cuda:
            results[f"amp {args.amp_dtype}"] = run(args, root, device, True, steps, warmup, batch)
    print(f"{'mode':<16}{'workers':>8}{'step s':>10}{'data %':>9}{'clips/s':>10}")
    for name, r in results.items():
        row = f"{name:<16}{r['workers']:>8}{r['step_s']:>10.3f}"
        print(f"{row}{100 * r['data_frac']:>9.1f}{r['clips_per_s']:>10.2f}")
    fp32 = results["fp32"]
    print(f"data time / step time (fp32): {100 * fp32['data_frac']:.1f}% (target on GPU < 5%)")
    if cuda:
        amp_r = results[f"amp {args.amp_dtype}"]
        print(f"AMP / fp32 throughput: {amp_r['clips_per_s'] / fp32['clips_per_s']:.2f}x (target >= 1.8x)")
        print(f"data time / step time (AMP): {100 * amp_r['data_frac']:.1f}%")


if __name__ == "__main__":
    main()
