"""What a model costs: parameters, multiply-adds per view and per video, where they go, and its latency.

    from video_attn.apis import analyze_model

    cost = analyze_model(cfg, latency=False)   # a ModelCost; cost.to_dict() is JSON-ready
    cost.macs_per_view / 1e9                   # G multiply-adds of one test view

Conventions (those of the papers' tables and of mmaction2's / fvcore's counters):

- **MACs** (multiply-accumulates) are what papers call "FLOPs": ResNet-50 is 4.1 G per 224 px frame
  (torchvision: 4.09 G). ``torch.utils.flop_counter`` counts 2 FLOPs per multiply-add; ``macs = flops / 2``
  and :attr:`ModelCost.flops_per_view` gives the FLOPs as well.
- Counted: convolutions (grouped and 1-d included) and matrix products (linear, bmm, einsum, attention).
  Not counted: elementwise work (BatchNorm in eval mode, activations, the products of attention gates,
  pooling, softmax, TSM's shift), as in the counters whose numbers papers quote.
- TAM's aggregation (its Eq. 4) is a depthwise temporal convolution (K * T * H * W MACs per channel of a
  clip). The default form (a fused sum of shifted frames) is elementwise work the counter cannot see, so
  the count runs on a copy whose TAMs use the official ``grouped_conv`` form (same values): TAM's
  aggregation is counted as the convolution it is.
- A *view* is one clip through the model at the test input size. Action: ``num_segments`` frames (the
  sampler's clip length) of the evaluated split (``data.test`` when its ``ann_file`` is set, else
  ``data.val``) at its crop size (``three``: ``data.scale_size`` squared; otherwise ``data.input_size``);
  views per video = ``num_clips`` x crops (1, 3 or 10). ReID: ``model.num_segments`` frames at
  ``data.input_size``; views per video = 1 for ``eval.test_mode=evenly``, unknown for ``all`` / ``dense``
  (whole tracklets: the cost follows the tracklet's length; :attr:`ModelCost.macs_per_frame` is the rate).
- Parameters: all of the model's; trainable ones exclude what ``train.freeze`` and
  ``model.backbone.frozen_bn`` freeze.

Published figures (tests/tools/test_analyze_model.py): ResNet-50 4.09 G per 224 px frame, as torchvision;
TANet-R50 8 frames: 25,590,320 parameters, as mmaction2 lists, and 42.78 G MACs per 256 px view (the
Kinetics three-crop test view; 32.76 G at 224 px) against mmaction2's 43.07 G ("43 G") for that view. The
0.7 % is the counting convention: mmaction2's counter (mmcv's module hooks) adds BatchNorm (2 per element),
ReLU and pooling (1 per element) and does not see TAM's aggregation; by those rules this model gives
mmaction2's figure exactly.

Counting runs on the ``meta`` device (shapes only, no arithmetic: a ResNet-50 clip counts in a fraction of a
second), falling back to the CPU for a model with an op that has no meta kernel. Latency runs the real model
(random weights; the same arithmetic as trained ones) on the chosen device.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from video_attn.config.loader import config_from_dict
from video_attn.config.schema import Config, ConfigError
from video_attn.data.datasets.action_build import action_num_classes
from video_attn.data.datasets.reid_build import build_reid_sampler
from video_attn.data.frame_sampling import build_frame_sampler
from video_attn.data.transforms import build_clip_transform
from video_attn.engine import distributed as du
from video_attn.engine.finetune import freeze_parts
from video_attn.models import build_model
from video_attn.models.attention.factory import CONVS, GATES, RESIDUALS, STAGE_MODULES
from video_attn.models.temporal.registry import ACTION_TEMPORAL_MODULES, REID_TEMPORAL_MODULES
from video_attn.models.temporal.tam import TAM, set_tam_aggregation
from video_attn.tasks import build_task

from .runtime import build_model_on

__all__ = [
    "CostRow",
    "Latency",
    "ModelCost",
    "analyze_model",
    "count_macs",
    "count_parameters",
    "measure_latency",
    "module_rows",
    "stage_rows",
    "view_protocol",
]

logger = logging.getLogger(__name__)

# What each kind of registered module is, for the per-module-type rows.
ROLES: dict[str, tuple[dict[str, type[nn.Module] | None], str]] = {
    "gate": (GATES, "attention gate (adds to the block)"),
    "conv": (CONVS, "3x3 conv replacement (its cost replaces a plain conv's)"),
    "residual": (RESIDUALS, "residual replacement (adds to the block)"),
    "stage": (STAGE_MODULES, "stage module (adds after a stage)"),
    "temporal": ({**ACTION_TEMPORAL_MODULES, **REID_TEMPORAL_MODULES}, "temporal module"),
}


@dataclass
class CostRow:
    """Parameters and multiply-adds (per view) of a part of a model."""

    name: str
    params: int
    macs: int
    count: int = 1  # instances (module-type rows)
    note: str = ""


@dataclass
class Latency:
    """Forward time of ``batch_size`` clips (inference mode), the median of ``repeats`` after warm-up."""

    mode: str  # eager | compile
    device: str
    batch_size: int
    median_ms: float
    min_ms: float
    clips_per_s: float
    frames_per_s: float
    warmup: int
    repeats: int
    compile_s: float | None = None  # the first (compiling) call


@dataclass
class ModelCost:
    """The cost figures of one model (see the module docstring for the conventions)."""

    arch: str
    task: str
    view_shape: tuple[int, ...]  # (T, 3, H, W) of one view
    views: int | None  # per video; None when it depends on the video's length
    views_source: str
    params: int
    trainable_params: int
    macs_per_view: int
    stages: list[CostRow]
    modules: list[CostRow]
    plain: CostRow | None = None  # the same network without attention and temporal modules
    latency: list[Latency] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def flops_per_view(self) -> int:
        """FLOPs as ``torch.utils.flop_counter`` counts them: 2 per multiply-add."""
        return 2 * self.macs_per_view

    @property
    def macs_per_frame(self) -> float:
        return self.macs_per_view / self.view_shape[0]

    @property
    def macs_per_video(self) -> int | None:
        return None if self.views is None else self.macs_per_view * self.views

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            unit="MACs (multiply-accumulates; FLOPs = 2 x MACs)",
            flops_per_view=self.flops_per_view,
            macs_per_frame=self.macs_per_frame,
            macs_per_video=self.macs_per_video,
        )
        return out


# -------------------------------------------------------------------------------------------- counting
def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts (shared tensors once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _counting_copy(model: nn.Module, device: str) -> nn.Module:
    counted = copy.deepcopy(model).eval()
    set_tam_aggregation(counted, "grouped_conv")  # the aggregation as the convolution it is, same values
    return counted.to(device)


def _flop_counts(model: nn.Module, input_shape: Sequence[int], device: str) -> dict[str, int]:
    clip = torch.zeros(tuple(input_shape), device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(clip)
    root = type(model).__name__
    out: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        if name == "Global":
            continue
        path = "" if name == root else name.removeprefix(root + ".")
        out[path] = sum(int(v) for v in ops.values())
    out.setdefault("", int(counter.get_total_flops()))
    return out


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Multiply-adds of one forward pass of ``model`` (eval mode) on a clip of ``input_shape``, per module
    path (``""``: the whole model; a module's figure includes its submodules'). See the module docstring
    for what is counted; ``model`` is not changed (a copy is counted, on the meta device when it can be)."""
    try:
        flops = _flop_counts(_counting_copy(model, "meta"), input_shape, "meta")
    except (NotImplementedError, RuntimeError) as exc:
        logger.info("counting on the CPU: the model does not run on the meta device (%s)", exc)
        flops = _flop_counts(_counting_copy(model, "cpu"), input_shape, "cpu")
    return {path: value // 2 for path, value in flops.items()}


def _params_under(model: nn.Module, prefixes: Sequence[str]) -> int:
    starts = tuple(f"{pre}." for pre in prefixes)
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith(starts))


def stage_rows(model: nn.Module, macs: dict[str, int]) -> list[CostRow]:
    """Parameters and MACs of the stem, each ResNet stage (with its stage module), and what follows the
    backbone (action: the classifier; ReID: the temporal module and the head); ``other`` holds the rest."""
    groups: list[tuple[str, list[str]]] = [("stem", ["backbone.conv1", "backbone.bn1"])]
    for i in range(1, 5):
        groups.append((f"layer{i}", [f"backbone.layer{i}", f"backbone.stage_modules.layer{i}"]))
    children = [name for name, _ in model.named_children() if name != "backbone"]
    groups += [(name, [name]) for name in children if _params_under(model, [name]) or macs.get(name)]
    rows = [
        CostRow(name, _params_under(model, prefixes), sum(macs.get(p, 0) for p in prefixes))
        for name, prefixes in groups
    ]
    total_params, _ = count_parameters(model)
    rest = CostRow("other", total_params - sum(r.params for r in rows), macs[""] - sum(r.macs for r in rows))
    if rest.params or rest.macs:
        rows.append(rest)
    return rows


def _registered_types() -> dict[type[nn.Module], tuple[str, str]]:
    """Each registered module class -> (row name with its config names, note)."""
    names: dict[type[nn.Module], list[str]] = {}
    notes: dict[type[nn.Module], str] = {}
    for registry, note in ROLES.values():
        for key, cls in registry.items():
            if cls is not None:
                names.setdefault(cls, []).append(key)
                notes.setdefault(cls, note)
    return {cls: (f"{cls.__name__} ({', '.join(keys)})", notes[cls]) for cls, keys in names.items()}


def module_rows(model: nn.Module, macs: dict[str, int]) -> list[CostRow]:
    """One row per type of attention / conv-replacement / residual / stage / temporal module in ``model``:
    instances, parameters and MACs of all of them (outermost instances only: CBAM's own channel and spatial
    halves count in CBAM's row)."""
    known = _registered_types()
    rows: dict[type[nn.Module], CostRow] = {}
    taken: list[str] = []
    for path, module in model.named_modules():
        cls = type(module)
        if cls not in known or any(path.startswith(f"{outer}.") for outer in taken):
            continue
        taken.append(path)
        name, note = known[cls]
        row = rows.setdefault(cls, CostRow(name, 0, 0, count=0, note=note))
        row.count += 1
        row.params += sum(p.numel() for p in module.parameters())
        row.macs += macs.get(path, 0)
    return list(rows.values())


# ------------------------------------------------------------------------------------------- the views
def view_protocol(cfg: Config) -> tuple[int, tuple[int, int], int | None, str]:
    """``(frames T, (H, W), views per video or None, how the views were found)`` of the test protocol of
    ``cfg`` (see the module docstring)."""
    task = build_task(cfg)
    if task.name == "action":
        split = task.eval_splits()[0]
        split_cfg = cfg.data[split]
        sampler = build_frame_sampler(split_cfg, cfg.data, cfg.model.num_segments, train=False)
        transform = build_clip_transform(cfg.data, split_cfg, train=False, flip_label_map={})
        size = transform.output_size or tuple(cfg.data.input_size)
        views = sampler.num_views * transform.num_crops
        source = (
            f"data.{split}: {sampler.num_views} clip(s) x {transform.num_crops} crop(s) "
            f"({split_cfg.crop} crop, {size[0]}x{size[1]})"
        )
        return sampler.clip_len, (int(size[0]), int(size[1])), views, source
    sampler = build_reid_sampler(cfg, train=False)
    size = tuple(cfg.data.input_size)
    frames = sampler.clip_len if sampler.clip_len > 0 else cfg.model.num_segments
    if sampler.num_views > 0 and sampler.clip_len > 0:
        return frames, (int(size[0]), int(size[1])), sampler.num_views, f"eval.test_mode={cfg.eval.test_mode}"
    source = (
        f"eval.test_mode={cfg.eval.test_mode}: whole tracklets, the cost follows their length "
        f"(a view here: {frames} frames)"
    )
    return frames, (int(size[0]), int(size[1])), None, source


# -------------------------------------------------------------------------------------------- latency
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    compile: bool = False,
    warmup: int = 3,
    repeats: int = 10,
) -> Latency:
    """Time ``model`` (eval, inference mode) on a random batch of ``input_shape`` on the model's device:
    ``warmup`` calls (with ``compile``, the first one compiles and is reported as ``compile_s``), then the
    median and minimum of ``repeats`` calls."""
    if warmup < 1 or repeats < 1:
        raise ValueError(f"warmup and repeats must be >= 1, got {warmup}, {repeats}")
    device = next(model.parameters()).device
    model.eval()
    run = torch.compile(model) if compile else model
    clip = torch.randn(tuple(input_shape), device=device)
    compile_s = None
    with torch.inference_mode():
        for i in range(warmup):
            start = time.perf_counter()
            run(clip)
            _sync(device)
            if i == 0 and compile:
                compile_s = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(clip)
            _sync(device)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    batch, frames = int(input_shape[0]), int(input_shape[0]) * int(input_shape[1])
    return Latency(
        mode="compile" if compile else "eager",
        device=str(device),
        batch_size=batch,
        median_ms=median * 1e3,
        min_ms=min(times) * 1e3,
        clips_per_s=batch / median,
        frames_per_s=frames / median,
        warmup=warmup,
        repeats=repeats,
        compile_s=compile_s,
    )


# ------------------------------------------------------------------------------------------- the model
def _analysis_config(cfg: Config, task_name: str) -> tuple[Config, list[str]]:
    """A copy of ``cfg`` that builds without files: no pretrained weights; an unset ``model.num_classes``
    from the class names file (action). Returns the notes to report."""
    cfg = config_from_dict(cfg.to_dict())
    cfg.model.backbone.pretrained = None  # the weights do not change the cost
    notes = []
    if cfg.model.num_classes is None:
        try:
            if task_name != "action":
                raise ValueError("no class names file for ReID")
            cfg.model.num_classes = action_num_classes(cfg, [])
            notes.append(f"model.num_classes={cfg.model.num_classes} from the class names file")
        except (ValueError, OSError):
            raise ConfigError(
                "model.num_classes is not set and cannot be read from a class names file: set "
                "model.num_classes=K (only the classifier's size depends on it)"
            ) from None
    return cfg, notes


def _plain_config(cfg: Config, task_name: str) -> Config | None:
    """``cfg`` without backbone attention, conv replacements, highway, stage modules and (action) the
    temporal module: the plain ResNet (TSN) the extensions are added to; None when ``cfg`` is that already."""
    plain = config_from_dict(cfg.to_dict())
    bb = plain.model.backbone
    bb.attention, bb.conv, bb.residual, bb.stage_module = "none", "none", "standard", "none"
    bb.attention_kwargs, bb.conv_kwargs, bb.residual_kwargs, bb.stage_module_kwargs = {}, {}, {}, {}
    if task_name == "action":
        plain.model.arch, plain.model.temporal_kwargs = "tsn", {}
    return None if plain.to_dict() == cfg.to_dict() else plain


def _plain_name(cfg: Config, task_name: str) -> str:
    depth = cfg.model.backbone.depth
    if task_name == "action":
        return f"plain ResNet-{depth} TSN (no attention, no temporal module)"
    return f"{cfg.model.arch} on a plain ResNet-{depth} (no backbone attention)"


def analyze_model(
    cfg: Config,
    views: int | None = None,
    input_size: Sequence[int] | None = None,
    latency: bool = True,
    compile: bool = False,
    device: str | torch.device = "auto",
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 10,
) -> ModelCost:
    """The cost of the model ``cfg`` builds (random weights; no checkpoint or pretrained file needed).

    Args:
        cfg: a resolved config; its test protocol gives the view (see the module docstring).
        views: views per video instead of the protocol's (``num_clips`` x crops).
        input_size: ``(H, W)`` of a view instead of the protocol's crop size.
        latency: measure the forward time of ``batch_size`` views in eager mode on ``device``
            (``"auto"``: CUDA when available); ``compile`` adds the ``torch.compile``d model.
        warmup, repeats: calls before timing, and timed calls (their median is reported).

    Raises ``ValueError`` (incl. ``ConfigError``) with a one-line reason for a config it cannot build.
    """
    if views is not None and views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    task_name = build_task(cfg).name
    cfg, notes = _analysis_config(cfg, task_name)
    frames, size, protocol_views, views_source = view_protocol(cfg)
    if views is not None:
        protocol_views, views_source = views, "given"
    if input_size is not None:
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"input size must be two positive numbers H W, got {list(input_size)}")
        size = (int(input_size[0]), int(input_size[1]))
        views_source += f"; input size set to {size[0]}x{size[1]}"
    view_shape = (frames, 3, size[0], size[1])

    model = build_model(cfg.model).eval()
    freeze_parts(model, cfg.train.freeze)
    total, trainable = count_parameters(model)
    macs = count_macs(model, (1, *view_shape))

    plain_row = None
    plain_cfg = _plain_config(cfg, task_name)
    if plain_cfg is not None:
        plain_model = build_model(plain_cfg.model)
        plain_macs = count_macs(plain_model, (1, *view_shape))[""]
        plain_row = CostRow(_plain_name(cfg, task_name), count_parameters(plain_model)[0], plain_macs)
    notes.append(
        "MACs = multiply-accumulates (papers' 'FLOPs'); torch.utils.flop_counter counts 2 FLOPs per MAC. "
        "Convolutions and matrix products are counted; elementwise ops (norms, activations, gate products) "
        "are not"
    )
    if any(isinstance(m, TAM) for m in model.modules()):
        notes.append("TAM's aggregation is counted as the official grouped convolution (same values)")

    timings = []
    if latency:
        run_device = du.resolve_device(device) if device in ("auto", "cpu", "cuda") else torch.device(device)
        runner = build_model_on(cfg, run_device).eval()
        shape = (batch_size, *view_shape)
        timings.append(measure_latency(runner, shape, warmup=warmup, repeats=repeats))
        if compile:
            timings.append(measure_latency(runner, shape, compile=True, warmup=warmup, repeats=repeats))
    return ModelCost(
        arch=cfg.model.arch,
        task=task_name,
        view_shape=view_shape,
        views=protocol_views,
        views_source=views_source,
        params=total,
        trainable_params=trainable,
        macs_per_view=macs[""],
        stages=stage_rows(model, macs),
        modules=module_rows(model, macs),
        plain=plain_row,
        latency=timings,
        notes=notes,
    )
