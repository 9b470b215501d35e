#!/usr/bin/env python3
"""One prepared run over every CUDA path of the project, for the few minutes a GPU machine is lent.

    python benchmarks/gpu_check.py                         # on a GPU (H200: an estimated 3-4 minutes)
    python benchmarks/gpu_check.py --out gpu_check.json    # also write the table (.json, else markdown)
    python benchmarks/gpu_check.py --only 1,5,9d           # some rows only (keys of the table)
    python benchmarks/gpu_check.py --cpu-smoke             # the same orchestration on the CPU, tiny models

Without a CUDA device (and without ``--cpu-smoke``) it prints one line, ``skipped: no CUDA device ...``, and
exits 0. Otherwise it prints the environment (torch, CUDA, GPU, cuDNN, NCCL, decord / PyAV / torchcodec),
generates its data in a temporary folder (H.264 videos with ``train_step.py``'s ``make_videos`` and a
video_list; a MARS-layout ReID set with ``make_reid_dataset``), runs the checks below and prints a markdown
table: check | what ran | clips/s (or frames/s) | data-time share | peak GPU memory | status / notes.
Each check runs in its own try/except with a time budget: a failure (or an exceeded budget) becomes a
``failed: <one-line error>`` row (the traceback goes to stderr) and the run goes on; a row that cannot run
here says ``skipped: <reason>``. Rows are printed as they finish and ``--out`` is rewritten after each
one, so a run killed by an outer time limit still leaves the rows done so far.

Rows (training rows go through the real pipeline: generated videos, the video_list dataset, TSN sampling,
multi-scale crop + flip, the task's DataLoader with the config's default ``data.num_workers`` and pinned
memory, and the engine's ``Trainer``; ``warmup`` untimed steps, then ``steps`` timed ones; clips/s is the
wall time of the timed steps with CUDA synchronised at both ends, data share is the time spent waiting for
the loader over that wall time):
  1   TANet-R50 8x224 training, fp32.
  2   same, AMP bf16 (``train.amp``, ``amp_dtype=bfloat16``): autocast must be seen (the classifier's output
      dtype) and the Trainer's GradScaler must be disabled.
  3   same, AMP fp16: the GradScaler must be enabled, its scale finite, and optimiser steps taken (a skipped
      step halves the scale, so skipped = log2(65536 / scale) over these few steps).
  4   same, bf16 + ``train.channels_last`` (``build_model_on``): the conv weights must be channels_last.
  5   same, bf16 + ``torch.compile`` (as ``apis/training.py``): compile time (the warm-up steps beyond the
      steady step time) apart from the steady clips/s. Runs LAST (it is the slowest) and gets the time left.
  6   DDP: a world-size-1 process group (nccl; gloo on the CPU), the model in ``DistributedDataParallel``
      (``device_ids=[0]``) under the Trainer, bf16; an all_reduce is checked; the group is destroyed after.
  7   GLTR-R50 ReID training, bf16, ``configs/reid/gltr_r50_mars.yaml`` with 8 tracklets of 8x256x128 on a
      generated MARS-layout set (16 identities).
  8a  action evaluation: ``task.evaluate`` on a small val list (1 clip x centre crop), bf16.
  8b  ReID evaluation: query / gallery features (``test_mode=all``, whole tracklets) then mAP / CMC as
      ``ReidTask.evaluate`` computes them; ``evaluate_features`` also runs on CUDA and on the CPU: they must
      agree.
  9a  decode, decord (CPU): one training item per clip (open_video + TSN sampling + get_frames + transform).
  9b  decode, PyAV (CPU): the same.
  9c  decode, torchcodec on the CPU: the same through ``open_video(..., backend="torchcodec")``, when the
      torchcodec extra is installed and finds FFmpeg's libraries.
  9d  decode, torchcodec on CUDA (NVDEC): the same, plus the difference to the CPU frames.
``--cpu-smoke`` (for tests): ResNet-18 at base width 8, 4 frames of 32 px (ReID 32x16), 2 timed steps after
1, 1 loader worker; rows 2-5 and 9d say ``skipped: needs CUDA``, row 6 runs on gloo, rows 7 and 8 run in fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import platform
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
NO_CUDA_LINE = "skipped: no CUDA device (torch.cuda.is_available() is False)"
GIB = 1024**3


# ------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Sizes:
    """Model, data and step sizes of one run (GPU defaults; :data:`SMOKE` for ``--cpu-smoke``)."""

    depth: int = 50
    base_width: int = 64
    segments: int = 8
    size: int = 224  # action crop; the val short side is scale_size
    scale_size: int = 256
    num_classes: int = 10
    videos: int = 16  # distinct generated videos (the lists repeat them)
    video_frames: int = 64
    video_hw: tuple[int, int] = (256, 340)
    batch: int = 8
    warmup: int = 3
    steps: int = 10
    num_workers: int | None = None  # None: the config default (data.num_workers)
    val_videos: int = 16
    eval_batch: int = 8
    reid_depth: int = 50
    reid_base_width: int = 64
    reid_ids: int = 16  # training and test identities each
    reid_input: tuple[int, int] = (256, 128)
    reid_segments: int = 8
    reid_batch: int = 8
    reid_embed: int | None = None  # GLTR embed_dim; None: the config's (128)
    decode_clips: int = 32


SMOKE = Sizes(
    depth=18, base_width=8, segments=4, size=32, scale_size=32, num_classes=3, videos=4, video_frames=16,
    video_hw=(48, 64), batch=2, warmup=1, steps=2, num_workers=1, val_videos=4, eval_batch=2, reid_depth=18,
    reid_base_width=8, reid_ids=4, reid_input=(32, 16), reid_segments=4, reid_batch=4, reid_embed=16,
    decode_clips=4,
)

# Seconds per check on the GPU (upper bounds; the total --time-limit clamps them). Rows run in this order.
BUDGETS = {"1": 60, "2": 40, "3": 40, "4": 40, "6": 45, "7": 60, "8a": 30, "8b": 60,
           "9a": 20, "9b": 25, "9c": 20, "9d": 25, "5": 180}
SMOKE_BUDGET = 60
MIN_COMPILE_S = 45  # below this much time left, the compile row is skipped rather than cut off


class Skip(Exception):
    """The check cannot run here; the message is the reason."""


class CheckFailed(Exception):
    """The check ran but a result is wrong (e.g. no autocast, a non-finite grad scale)."""


class CheckTimeout(BaseException):
    """The check's time budget ran out (raised by SIGALRM; a BaseException, so that no ``except Exception``
    in the library, such as a dataset's decode-retry loop, takes it for an ordinary error)."""


class Terminated(BaseException):
    """SIGTERM (e.g. ``timeout``): print the rows done so far, then exit."""


class _StopTraining(Exception):
    """Raised by :class:`Measure` to end a training run after its steps (or at its soft deadline)."""


@dataclass
class Row:
    key: str
    check: str
    what: str = ""
    rate: str = ""
    data_share: str = ""
    peak_mem: str = ""
    status: str = "not run"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def status_notes(self) -> str:
        return "; ".join([self.status, *self.notes])


ROWS = [
    ("1", "TANet train fp32"),
    ("2", "TANet train AMP bf16"),
    ("3", "TANet train AMP fp16 + GradScaler"),
    ("4", "TANet train bf16 + channels_last"),
    ("5", "TANet train bf16 + torch.compile"),
    ("6", "DDP world size 1"),
    ("7", "GLTR ReID train bf16"),
    ("8a", "action evaluate"),
    ("8b", "ReID evaluate (features, mAP/CMC)"),
    ("9a", "decode decord (CPU)"),
    ("9b", "decode PyAV (CPU)"),
    ("9c", "decode torchcodec CPU"),
    ("9d", "decode torchcodec CUDA"),
]


# ------------------------------------------------------------------------------------------------ context
class Context:
    """What the checks share: device, sizes, the temporary folder and the data generated on first use."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, tmp: Path) -> None:
        self.args = args
        self.sizes = sizes
        self.tmp = tmp
        self.smoke = args.cpu_smoke
        self.device = torch.device("cpu") if self.smoke else torch.device("cuda", 0)
        self.cuda = self.device.type == "cuda"
        # first frames of one video per decoder, compared between the decode rows
        self.reference_frames: np.ndarray | None = None
        self.torchcodec_cpu_frames: np.ndarray | None = None
        self._videos: Path | None = None
        self._reid: Path | None = None
        self._run = 0

    def videos(self) -> Path:
        """Folder with ``videos/<i>.mp4`` (generated once)."""
        if self._videos is None:
            from train_step import make_videos

            s = self.sizes
            start = time.perf_counter()
            root = make_videos(self.tmp / "action", s.videos, s.video_frames, *s.video_hw)
            print(f"  (generated {s.videos} H.264 videos {s.video_hw[1]}x{s.video_hw[0]}x{s.video_frames} in "
                  f"{time.perf_counter() - start:.1f} s)", flush=True)
            self._videos = root
        return self._videos

    def reid_root(self) -> Path:
        """A MARS-layout set (generated once)."""
        if self._reid is None:
            from video_attn.data.synthetic.reid import make_reid_dataset

            start = time.perf_counter()
            root = self.tmp / "mars"
            ids = self.sizes.reid_ids
            make_reid_dataset(root, seed=0, num_train_ids=ids, num_test_ids=ids)
            print(f"  (generated a MARS-layout set, {ids} + {ids} identities, in "
                  f"{time.perf_counter() - start:.1f} s)", flush=True)
            self._reid = root
        return self._reid

    def work_dir(self) -> Path:
        self._run += 1
        return self.tmp / f"work{self._run}"

    def require_cuda(self) -> None:
        if not self.cuda:
            raise Skip("needs CUDA")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ training
def action_config(ctx: Context, work_dir: Path, num_items: int, **train: Any):
    """TANet on the generated videos (video_list), ``num_items`` training lines; ``train`` sets train.*."""
    from video_attn.config.loader import build_section
    from video_attn.config.schema import Config

    s = ctx.sizes
    root = ctx.videos()
    lines = [f"videos/{i % s.videos}.mp4 {i % s.num_classes}" for i in range(num_items)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    val = [f"videos/{i % s.videos}.mp4 {i % s.num_classes}" for i in range(s.val_videos)]
    (root / "val.txt").write_text("\n".join(val) + "\n")
    data: dict[str, Any] = {
        "format": "video_list",
        "root": str(root),
        "train": {"ann_file": "train.txt"},
        "val": {"ann_file": "val.txt", "sampler": "tsn", "crop": "center", "num_clips": 1},
        "input_size": [s.size, s.size],
        "scale_size": s.scale_size,
    }
    if s.num_workers is not None:
        data["num_workers"] = s.num_workers
    return build_section(
        Config,
        {
            "work_dir": str(work_dir),
            "device": ctx.device.type,
            "model": {
                "arch": "tanet",
                "num_classes": s.num_classes,
                "num_segments": s.segments,
                "backbone": {"depth": s.depth, "base_width": s.base_width},
            },
            "data": data,
            "train": {"epochs": 1, "batch_size": s.batch, "log_every_iters": 10**6, **train},
            "eval": {"batch_size": s.eval_batch},
        },
    )


def reid_config(ctx: Context, work_dir: Path, **train: Any):
    """``configs/reid/gltr_r50_mars.yaml`` on the generated MARS-layout set, resized per :class:`Sizes`."""
    from video_attn.config.loader import build_section, read_config_tree
    from video_attn.config.schema import Config

    s = ctx.sizes
    tree = read_config_tree(REPO / "configs" / "reid" / "gltr_r50_mars.yaml")
    updates: dict[str, Any] = {
        "work_dir": str(work_dir),
        "device": ctx.device.type,
        "model": {
            "num_classes": None,  # from the training identities
            "num_segments": s.reid_segments,
            "backbone": {"depth": s.reid_depth, "base_width": s.reid_base_width},
        },
        "data": {"root": str(ctx.reid_root()), "input_size": list(s.reid_input)},
        "train": {"epochs": 1, "batch_size": s.reid_batch, "log_every_iters": 10**6, **train},
    }
    if s.reid_embed is not None:
        updates["model"]["temporal_kwargs"] = {"embed_dim": s.reid_embed}
    if s.num_workers is not None:
        updates["data"]["num_workers"] = s.num_workers
    _merge(tree, updates)
    return build_section(Config, tree)


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def make_measure(ctx: Context, warmup: int, total: int, deadline: float):
    """A Trainer hook timing the steps after ``warmup`` and stopping the run after ``total`` steps, or
    earlier at ``deadline`` (perf_counter) once a timed step is done."""
    from video_attn.engine.train_loop import HookBase

    class Measure(HookBase):
        name = "gpu_check_measure"

        def __init__(self) -> None:
            self.step_times: list[float] = []  # every step's own (unsynchronised) time
            self.timed_steps = 0
            self.samples = 0
            self.data_time = 0.0
            self.t0 = self.t1 = 0.0
            self.stopped_early = False

        def after_step(self) -> None:
            t = self.trainer
            step = t.last_step
            self.step_times.append(step.step_time)
            if t.iter == warmup:
                ctx.sync()
                self.t0 = time.perf_counter()
            elif t.iter > warmup:
                self.timed_steps += 1
                self.samples += step.samples
                self.data_time += step.data_time
            late = time.perf_counter() > deadline and self.timed_steps > 0
            if t.iter >= total or late:
                ctx.sync()
                self.t1 = time.perf_counter()
                self.stopped_early = t.iter < total
                raise _StopTraining

    return Measure()


def classifier_dtypes(model: torch.nn.Module) -> tuple[set[torch.dtype], Any]:
    """Dtypes of the classifier's outputs seen from now on (autocast makes them bf16 / fp16)."""
    seen: set[torch.dtype] = set()
    handle = model.classifier.register_forward_hook(lambda m, args, out: seen.add(out.dtype))
    return seen, handle


def run_training(
    ctx: Context, row: Row, cfg, budget: float, *, compile_model: bool = False, ddp: bool = False,
    what: str = "",
) -> dict[str, Any]:
    """Train ``cfg`` (action or ReID) through the task's loader and the Trainer; fill the row's numbers."""
    from video_attn.apis import amp_dtype_for, build_model_on
    from video_attn.engine.lr_scheduler import build_scheduler
    from video_attn.engine.optim import build_optimizer
    from video_attn.engine.trainer import Trainer
    from video_attn.tasks import build_task

    s = ctx.sizes
    warmup, total = s.warmup, s.warmup + s.steps
    start = time.perf_counter()
    if ctx.cuda:
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    task = build_task(cfg)
    train_set = task.build_train_dataset()  # sets an unset model.num_classes (ReID)
    model = build_model_on(cfg, ctx.device)
    pin = cfg.data.pin_memory and ctx.cuda
    loader = task.build_train_loader(train_set, pin_memory=pin)
    optimizer = build_optimizer(model, cfg.train)
    loss_fn, loss_module = task.build_loss(model, ctx.device)
    if loss_module is not None:
        optimizer.add_param_group({"params": list(loss_module.parameters()), "lr": cfg.train.lr,
                                   "initial_lr": cfg.train.lr, "lr_mult": 1.0, "weight_decay": 0.0})
    amp = amp_dtype_for(cfg, ctx.device)
    train_model: torch.nn.Module = model
    if ddp:
        device_ids = [ctx.device.index] if ctx.cuda else None
        train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if compile_model:
        train_model = torch.compile(train_model)
    dtypes, handle = (set(), None) if compile_model else classifier_dtypes(model)
    trainer = Trainer(
        train_model, optimizer, build_scheduler(optimizer, cfg.train, len(loader)), loader, loss_fn,
        cfg.work_dir, max_epochs=math.ceil(total / len(loader)), device=ctx.device, unwrapped_model=model,
        clip_grad=cfg.train.clip_grad, amp_dtype=amp, handle_sigint=False,
    )
    # the soft deadline leaves a fifth of the budget for tear-down and the checks after training
    measure = make_measure(ctx, warmup, total, start + 0.8 * budget)
    trainer.register_hooks([measure])
    try:
        trainer.train()
    except _StopTraining:
        pass
    finally:
        if handle is not None:
            handle.remove()
    if measure.timed_steps == 0:
        raise CheckFailed(f"no timed step: the loader gave {len(loader)} batches for {total} steps")
    wall = measure.t1 - measure.t0
    steady = float(np.median(measure.step_times[warmup:]))
    row.what = (
        f"{what}, batch {cfg.train.batch_size}, {measure.timed_steps} steps after {warmup} warm-up, "
        f"{cfg.data.num_workers} workers{', pinned' if pin else ''}, "
        f"{precision(amp)}"
    )
    row.rate = f"{measure.samples / wall:.1f} clips/s"
    row.data_share = f"{100 * measure.data_time / wall:.1f}%"
    if measure.stopped_early:
        row.notes.append(f"stopped at the time budget after {measure.timed_steps}/{s.steps} timed steps")
    if cfg.train.amp and amp is None:
        row.notes.append(f"AMP off on the {ctx.device.type} (amp_dtype_for): fp32")
    result = {
        "amp": amp, "dtypes": dtypes, "scaler": trainer.scaler, "model": model,
        "steps_done": trainer.iter, "warmup_times": measure.step_times[:warmup], "steady_step_s": steady,
        "loss": trainer.last_step.loss,
    }
    del loader, trainer, train_model  # the loader's persistent workers stop here, not at a later gc
    return result


def precision(amp: torch.dtype | None) -> str:
    return f"AMP {str(amp).replace('torch.', '')}" if amp is not None else "fp32"


def check_autocast(result: dict[str, Any], row: Row) -> None:
    """The classifier's output dtype must be the autocast dtype; the GradScaler only with fp16."""
    amp, dtypes, scaler = result["amp"], result["dtypes"], result["scaler"]
    seen = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
    if amp is not None and dtypes != {amp}:
        raise CheckFailed(f"autocast {amp} requested but the classifier's outputs were {seen}")
    if scaler.is_enabled() != (amp == torch.float16):
        raise CheckFailed(f"GradScaler enabled={scaler.is_enabled()} with amp dtype {amp}")
    row.notes.append(f"classifier out {seen}, GradScaler {'on' if scaler.is_enabled() else 'off'}")


# ------------------------------------------------------------------------------------------------ checks
def action_what(ctx: Context) -> str:
    s = ctx.sizes
    return f"TANet-R{s.depth} {s.segments}x{s.size}"


def check_fp32(ctx: Context, row: Row, budget: float) -> None:
    cfg = action_config(ctx, ctx.work_dir(), (ctx.sizes.warmup + ctx.sizes.steps) * ctx.sizes.batch)
    result = run_training(ctx, row, cfg, budget, what=action_what(ctx))
    check_autocast(result, row)
    if not ctx.cuda:
        row.notes.append("no pinned memory on the CPU")


def check_bf16(ctx: Context, row: Row, budget: float) -> None:
    ctx.require_cuda()
    cfg = action_config(ctx, ctx.work_dir(), (ctx.sizes.warmup + ctx.sizes.steps) * ctx.sizes.batch,
                        amp=True, amp_dtype="bfloat16")
    check_autocast(run_training(ctx, row, cfg, budget, what=action_what(ctx)), row)


def check_fp16(ctx: Context, row: Row, budget: float) -> None:
    ctx.require_cuda()
    cfg = action_config(ctx, ctx.work_dir(), (ctx.sizes.warmup + ctx.sizes.steps) * ctx.sizes.batch,
                        amp=True, amp_dtype="float16")
    result = run_training(ctx, row, cfg, budget, what=action_what(ctx))
    check_autocast(result, row)
    scaler = result["scaler"]
    scale = float(scaler.get_scale())
    if not math.isfinite(scale) or scale <= 0:
        raise CheckFailed(f"GradScaler scale is {scale}")
    # no growth within growth_interval (2000) steps, so every skipped (inf/NaN) step multiplied the initial
    # scale (65536) by the backoff factor (0.5) once
    init, backoff = 65536.0, scaler.get_backoff_factor()
    skipped = round(math.log(scale / init) / math.log(backoff)) if scale < init else 0
    taken = result["steps_done"] - skipped
    row.notes.append(f"scale {scale:g} (finite), {taken}/{result['steps_done']} optimiser steps taken")
    if taken <= 0:
        raise CheckFailed(f"every fp16 step was skipped by the GradScaler (scale {scale:g})")


def check_channels_last(ctx: Context, row: Row, budget: float) -> None:
    ctx.require_cuda()
    cfg = action_config(ctx, ctx.work_dir(), (ctx.sizes.warmup + ctx.sizes.steps) * ctx.sizes.batch,
                        amp=True, amp_dtype="bfloat16", channels_last=True)
    result = run_training(ctx, row, cfg, budget, what=action_what(ctx) + ", channels_last")
    check_autocast(result, row)
    convs = [m.weight for m in result["model"].modules() if isinstance(m, torch.nn.Conv2d)]
    last = sum(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    row.notes.append(f"{last}/{len(convs)} conv weights channels_last after training")
    if last < len(convs):
        raise CheckFailed(f"only {last}/{len(convs)} Conv2d weights are channels_last")


def check_compile(ctx: Context, row: Row, budget: float) -> None:
    ctx.require_cuda()
    if budget < MIN_COMPILE_S:
        raise Skip(f"only {budget:.0f} s of the time limit left (compile needs about {MIN_COMPILE_S} s+)")
    cfg = action_config(ctx, ctx.work_dir(), (ctx.sizes.warmup + ctx.sizes.steps) * ctx.sizes.batch,
                        amp=True, amp_dtype="bfloat16", compile=True)
    result = run_training(ctx, row, cfg, budget, compile_model=True, what=action_what(ctx) + ", compiled")
    warm = result["warmup_times"]
    compile_s = sum(warm) - len(warm) * result["steady_step_s"]
    row.notes.append(f"compile {compile_s:.1f} s (warm-up steps {', '.join(f'{t:.1f}' for t in warm)} s, "
                     f"steady step {result['steady_step_s'] * 1000:.0f} ms)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_ddp(ctx: Context, row: Row, budget: float) -> None:
    import torch.distributed as dist

    if not dist.is_available():
        raise Skip("torch.distributed is not available in this build")
    if dist.is_initialized():
        raise CheckFailed("a process group already exists in this process")
    backend = "nccl" if ctx.cuda else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise Skip("this torch build has no NCCL")
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(_free_port())
    if ctx.cuda:
        torch.cuda.set_device(ctx.device)
    # fail fast rather than hang on a broken setup (the budget's alarm cannot interrupt NCCL's C++ calls)
    timeout = datetime.timedelta(seconds=max(30, int(budget)))
    dist.init_process_group(backend, rank=0, world_size=1, timeout=timeout)
    try:
        probe = torch.ones(4, device=ctx.device)
        dist.all_reduce(probe)
        if probe.tolist() != [1.0] * 4:
            raise CheckFailed(f"all_reduce over 1 rank changed the tensor: {probe.tolist()}")
        cfg = action_config(ctx, ctx.work_dir(), (ctx.sizes.warmup + ctx.sizes.steps) * ctx.sizes.batch,
                            amp=True, amp_dtype="bfloat16")
        result = run_training(ctx, row, cfg, budget, ddp=True, what=f"{action_what(ctx)} in DDP ({backend})")
        check_autocast(result, row)
        row.notes.append(f"{backend} process group of 1 rank, all_reduce ok")
        if not ctx.cuda:
            row.notes.append("nccl needs CUDA: gloo on the CPU")
    finally:
        dist.destroy_process_group()


def check_gltr(ctx: Context, row: Row, budget: float) -> None:
    cfg = reid_config(ctx, ctx.work_dir(), amp=True, amp_dtype="bfloat16")
    s = ctx.sizes
    what = f"GLTR-R{s.reid_depth} {s.reid_segments}x{s.reid_input[0]}x{s.reid_input[1]}"
    result = run_training(ctx, row, cfg, budget, what=what)
    check_autocast(result, row)
    row.rate = row.rate.replace("clips/s", "tracklets/s")
    row.notes.append(f"{cfg.model.num_classes} training identities, loss {result['loss']:.3f}")


def check_action_eval(ctx: Context, row: Row, budget: float) -> None:
    from video_attn.apis import amp_dtype_for, build_model_on
    from video_attn.tasks import build_task

    cfg = action_config(ctx, ctx.work_dir(), ctx.sizes.batch, amp=True, amp_dtype="bfloat16")
    task = build_task(cfg)
    model = build_model_on(cfg, ctx.device)
    amp = amp_dtype_for(cfg, ctx.device)
    loaders = task.build_eval_loaders(task.eval_splits("val"), pin_memory=cfg.data.pin_memory and ctx.cuda)
    ctx.sync()
    start = time.perf_counter()
    metrics = task.evaluate(model, loaders, ctx.device, amp)
    ctx.sync()
    wall = time.perf_counter() - start
    n = ctx.sizes.val_videos
    row.what = (f"{action_what(ctx)}, {n} val videos (1 clip x centre crop), batch {cfg.eval.batch_size}, "
                f"{cfg.data.num_workers} workers, {precision(amp)}")
    row.rate = f"{n / wall:.1f} videos/s"
    row.notes.append(f"top1 {metrics['top1']:.1f} (random weights), {metrics['num_videos']} videos")
    if metrics["num_videos"] != n or metrics.get("num_failed", 0):
        failed = metrics.get("num_failed")
        raise CheckFailed(f"{metrics['num_videos']} of {n} videos evaluated, {failed} failed to load")


def check_reid_eval(ctx: Context, row: Row, budget: float) -> None:
    from video_attn.apis import amp_dtype_for, build_model_on
    from video_attn.evaluation.reid import evaluate_features
    from video_attn.tasks import build_task, reid_metrics

    cfg = reid_config(ctx, ctx.work_dir(), amp=True, amp_dtype="bfloat16")
    task = build_task(cfg)
    task.build_train_dataset()  # model.num_classes from the training identities
    model = build_model_on(cfg, ctx.device)
    amp = amp_dtype_for(cfg, ctx.device)
    loaders = task.build_eval_loaders(task.eval_splits(), pin_memory=cfg.data.pin_memory and ctx.cuda)
    # ReidTask.evaluate, step by step: features of both splits, then the metrics
    ctx.sync()
    start = time.perf_counter()
    query = task.extract_features(model, loaders["query"], ctx.device, amp)
    gallery = task.extract_features(model, loaders["gallery"], ctx.device, amp)
    ctx.sync()
    extract_s = time.perf_counter() - start
    metrics = reid_metrics(query, gallery, cfg.eval, ctx.device)  # as ReidTask.evaluate does
    frames = int(query["num_frames"].sum() + gallery["num_frames"].sum())
    tracklets = len(query["index"]) + len(gallery["index"])
    num_q, num_g = len(query["index"]), len(gallery["index"])
    row.what = (f"GLTR-R{ctx.sizes.reid_depth}, {num_q} query + {num_g} gallery "
                f"tracklets (test_mode={cfg.eval.test_mode}), {cfg.data.num_workers} workers, "
                f"{precision(amp)}")
    row.rate = f"{frames / extract_s:.0f} frames/s ({tracklets / extract_s:.1f} tracklets/s)"
    row.notes.append(f"mAP {metrics['mAP']:.1f} rank1 {metrics['rank1']:.1f} ({cfg.eval.protocol}, random "
                     "weights)")
    # the evaluator on each device: the results must agree
    v_q, v_g = query["valid"], gallery["valid"]
    args = (query["features"][v_q], gallery["features"][v_g], query["pids"][v_q], gallery["pids"][v_g],
            query["camids"][v_q], gallery["camids"][v_g])
    kwargs = {"metric": cfg.eval.metric, "normalize": cfg.eval.normalize, "protocol": cfg.eval.protocol,
              "max_rank": cfg.eval.max_rank}
    devices = ["cpu", "cuda"] if ctx.cuda else ["cpu"]
    results = {}
    for dev in devices:
        ctx.sync()
        start = time.perf_counter()
        results[dev] = evaluate_features(*args, device=dev, **kwargs)
        ctx.sync()
        row.notes.append(f"evaluate_features on {dev} {1000 * (time.perf_counter() - start):.0f} ms")
    if ctx.cuda:
        a, b = results["cpu"], results["cuda"]
        if abs(a["mAP"] - b["mAP"]) > 1e-6 or not np.allclose(a["cmc"], b["cmc"], atol=1e-9):
            raise CheckFailed(f"evaluate_features cuda mAP {b['mAP']:.6f} != cpu {a['mAP']:.6f}")
        row.notes.append("cuda = cpu metrics")
    else:
        row.notes.append("evaluator on cpu only (no CUDA)")


# ------------------------------------------------------------------------------------------------ decoding
def torchcodec_opener(device: str) -> tuple[Callable[[str], Any], str]:
    """A function opening a video with torchcodec on ``device`` (never PyAV in its place), and its name; Skip
    when torchcodec, FFmpeg's libraries or the device's decoder is missing."""
    from video_attn.data.decoders import open_video, torchcodec_unavailable_reason

    reason = torchcodec_unavailable_reason(device)
    if reason:
        raise Skip(reason)
    opener = lambda p: open_video(p, backend="torchcodec", fallback=False, device=device)  # noqa: E731
    return opener, "open_video(backend='torchcodec')"


def run_decode(ctx: Context, row: Row, open_fn: Callable[[str], Any], label: str) -> np.ndarray:
    """Training items of the generated videos through ``open_fn``; the first clip's raw frames back."""
    from video_attn.config.schema import Config
    from video_attn.data.frame_sampling import SegmentSampler
    from video_attn.data.transforms import build_clip_transform

    s = ctx.sizes
    cfg = Config()
    cfg.data.input_size = [s.size, s.size]
    cfg.data.scale_size = s.scale_size
    transform = build_clip_transform(cfg.data, cfg.data.train, train=True)  # multi-scale crop + flip + norm
    sampler = SegmentSampler(s.segments, "random")
    root = ctx.videos()
    paths = [str(root / "videos" / f"{i % s.videos}.mp4") for i in range(s.decode_clips)]
    rng = np.random.default_rng(0)

    def item(path: str) -> np.ndarray:
        with open_fn(path) as reader:
            indices = sampler(len(reader), rng)[0]
            frames = reader.get_frames(indices)
        transform(frames, 0, rng)
        return frames

    with open_fn(paths[0]) as reader:  # warm-up, and the frames compared between backends
        first_frames = reader.get_frames(np.arange(min(8, len(reader))))
        label = f"{label} -> {type(reader).__name__}"
    start = time.perf_counter()
    for path in paths:
        item(path)
    wall = time.perf_counter() - start
    row.what = (f"{s.decode_clips} clips of {s.segments} frames from {s.video_hw[1]}x{s.video_hw[0]} H.264, "
                f"decode + TSN sampling + {s.size} px transform, 1 thread, {label}")
    row.rate = f"{s.decode_clips / wall:.1f} clips/s"
    return first_frames


def check_decode_decord(ctx: Context, row: Row, budget: float) -> None:
    from video_attn.data.decoders import decord_available, open_video

    if not decord_available():
        raise Skip("decord is not installed")
    open_fn = lambda p: open_video(p, backend="decord", fallback=False)  # noqa: E731
    ctx.reference_frames = run_decode(ctx, row, open_fn, "open_video(backend='decord')")


def check_decode_pyav(ctx: Context, row: Row, budget: float) -> None:
    from video_attn.data.decoders import open_video

    frames = run_decode(ctx, row, lambda p: open_video(p, backend="pyav"), "open_video(backend='pyav')")
    _compare_frames(ctx, row, frames, "decord")


def check_decode_torchcodec_cpu(ctx: Context, row: Row, budget: float) -> None:
    open_fn, how = torchcodec_opener("cpu")
    frames = run_decode(ctx, row, open_fn, how)
    ctx.torchcodec_cpu_frames = frames
    _compare_frames(ctx, row, frames, "decord")


def check_decode_torchcodec_cuda(ctx: Context, row: Row, budget: float) -> None:
    ctx.require_cuda()
    open_fn, how = torchcodec_opener("cuda")
    frames = run_decode(ctx, row, open_fn, how)
    with open_fn(str(ctx.videos() / "videos" / "0.mp4")) as reader:
        status = getattr(getattr(reader, "_decoder", None), "cpu_fallback", None)
    if status:
        row.notes.append(f"torchcodec fell back to the CPU: {status}")
    ref = getattr(ctx, "torchcodec_cpu_frames", None)
    if ref is not None and ref.shape == frames.shape:
        diff = np.abs(ref.astype(np.int16) - frames.astype(np.int16))
        row.notes.append(f"vs torchcodec CPU frames: mean |diff| {diff.mean():.2f}, max {diff.max()}")


def _compare_frames(ctx: Context, row: Row, frames: np.ndarray, name: str) -> None:
    ref = getattr(ctx, "reference_frames", None)
    if ref is None:
        return
    if ref.shape != frames.shape:
        raise CheckFailed(f"frames of shape {frames.shape} but {name} gives {ref.shape}")
    diff = int(np.abs(ref.astype(np.int16) - frames.astype(np.int16)).max())
    row.notes.append(f"first 8 frames {'identical to' if diff == 0 else f'max |diff| {diff} vs'} {name}")


CHECKS: dict[str, Callable[[Context, Row, float], None]] = {
    "1": check_fp32, "2": check_bf16, "3": check_fp16, "4": check_channels_last, "5": check_compile,
    "6": check_ddp, "7": check_gltr, "8a": check_action_eval, "8b": check_reid_eval,
    "9a": check_decode_decord, "9b": check_decode_pyav, "9c": check_decode_torchcodec_cpu,
    "9d": check_decode_torchcodec_cuda,
}


# ------------------------------------------------------------------------------------------------ running
def one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`CheckTimeout` in the main thread after ``seconds`` (SIGALRM; Python code only)."""

    def on_alarm(signum, frame):
        raise CheckTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_check(ctx: Context, row: Row, budget: float) -> None:
    """Run the row's check within ``budget`` seconds; its outcome goes into ``row.status``."""
    start = time.perf_counter()
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    try:
        with time_limit(budget):
            CHECKS[row.key](ctx, row, budget)
        row.status = "ran"
    except Skip as exc:
        row.status = f"skipped: {exc}"
    except CheckTimeout:
        row.status = f"failed: time budget of {budget:.0f} s exceeded"
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row; the run goes on
        row.status = f"failed: {one_line(exc)}"
        print(f"--- traceback of check {row.key} ({row.check}) ---", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
    finally:
        row.seconds = time.perf_counter() - start
        gc.collect()
        if ctx.cuda:
            try:
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated(ctx.device)
                row.peak_mem = f"{peak / GIB:.2f} GiB" if peak else ""
                torch.cuda.empty_cache()
            except Exception as exc:  # noqa: BLE001 - a broken CUDA context: the next checks will say so
                row.notes.append(f"CUDA after the check: {one_line(exc)}")


def environment(cuda: bool) -> list[str]:
    """Lines describing the software and the device."""
    lines = [f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
             f"torch threads {torch.get_num_threads()}"]
    if cuda:
        props = torch.cuda.get_device_properties(0)
        cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
        nccl = "-"
        with contextlib.suppress(Exception):
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        lines.append(f"CUDA {torch.version.cuda}, GPU {torch.cuda.get_device_name(0)} (sm {cap}, "
                     f"{props.total_memory / GIB:.0f} GiB), cuDNN {torch.backends.cudnn.version()}, "
                     f"NCCL {nccl}, bf16 supported {torch.cuda.is_bf16_supported()}")
    else:
        lines.append("device: CPU (--cpu-smoke)")
    versions = []
    for name in ("decord", "av", "torchcodec", "torchvision"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except Exception as exc:  # noqa: BLE001 - a broken install is reported, not fatal
            versions.append(f"{name} unavailable ({one_line(exc)[:80]})")
    lines.append(", ".join(versions))
    return lines


def markdown(rows: list[Row]) -> str:
    out = ["| check | what ran | clips/s (or frames/s) | data-time share | peak GPU mem | status / notes |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r.key}. {r.check}", r.what, r.rate, r.data_share, r.peak_mem,
                 f"{r.status_notes()} ({r.seconds:.1f} s)"]
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(out)


def write_out(path: Path, rows: list[Row], env: list[str], finished: bool) -> None:
    if path.suffix == ".json":
        text = json.dumps({"environment": env, "finished": finished,
                           "rows": [asdict(r) for r in rows]}, indent=2)
    else:
        text = "\n".join([*env, "", markdown(rows), ""])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny models on the CPU (tests the script)")
    p.add_argument("--out", type=Path, default=None, help="also write the table (.json: JSON, else markdown)")
    p.add_argument("--only", default=None, help="comma-separated row keys (e.g. 1,2,9c)")
    p.add_argument("--time-limit", type=float, default=285.0,
                   help="seconds for all checks together (default 285); later rows get what is left")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (GPU default 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps, >= 1 (GPU default 3)")
    p.add_argument("--batch-size", type=int, default=None, help="clips / tracklets per step (GPU default 8)")
    p.add_argument("--num-workers", type=int, default=None, help="loader workers (default: the config's)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(NO_CUDA_LINE)
        return 0
    sizes = SMOKE if args.cpu_smoke else Sizes()
    overrides = {"steps": args.steps, "warmup": args.warmup, "batch": args.batch_size,
                 "num_workers": args.num_workers}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "batch" in overrides:
        overrides["reid_batch"] = overrides["batch"]
    sizes = Sizes(**{**asdict(sizes), **overrides})
    if sizes.warmup < 1 or sizes.steps < 1:
        print("gpu_check.py: error: --warmup and --steps must be >= 1", file=sys.stderr)
        return 2
    keys = [k.strip() for k in args.only.split(",")] if args.only else list(BUDGETS)
    unknown = sorted(set(keys) - set(CHECKS))
    if unknown:
        print(f"gpu_check.py: error: unknown rows {', '.join(unknown)}; valid: {', '.join(CHECKS)}",
              file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise Terminated

    previous_term = signal.signal(signal.SIGTERM, on_term)
    start = time.perf_counter()
    env = environment(not args.cpu_smoke)
    print("\n".join(env))
    print(f"sizes: {sizes}", flush=True)
    rows = {key: Row(key, name) for key, name in ROWS}
    for key in CHECKS:
        if key not in keys:
            rows[key].status = "skipped: not selected (--only)"
    table = [rows[key] for key, _ in ROWS]
    finished = False
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            ctx = Context(args, sizes, Path(tmp))
            for key in (k for k in BUDGETS if k in keys):  # run order: compile (5) last
                row = rows[key]
                left = args.time_limit - (time.perf_counter() - start)
                budget = min(BUDGETS[key] if ctx.cuda else SMOKE_BUDGET, left)
                if left < 5 and key != "5":
                    row.status = f"skipped: the --time-limit of {args.time_limit:.0f} s is used up"
                else:
                    print(f"[{key}] {row.check} (budget {budget:.0f} s) ...", flush=True)
                    run_check(ctx, row, budget)
                print(f"[{key}] {row.status_notes()} | {row.rate} | data {row.data_share or '-'} | "
                      f"{row.seconds:.1f} s", flush=True)
                if args.out:
                    write_out(args.out, table, env, finished=False)
        finished = True
    except Terminated:
        print("terminated (SIGTERM): the rows so far", flush=True)
    finally:
        print()
        print(markdown(table))
        print(f"\ntotal {time.perf_counter() - start:.1f} s", flush=True)
        if args.out:
            write_out(args.out, table, env, finished)
        signal.signal(signal.SIGTERM, previous_term)
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
