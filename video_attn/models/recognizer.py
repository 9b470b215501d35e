"""Action recognizers: TSN, TSM and TANet on a per-frame 2D ResNet.

- TSN (Wang et al., ECCV 2016): per-frame backbone -> dropout -> new fc -> average of the frame logits
  ("average consensus"; the official TAM/TSM code averages logits, not probabilities).
- TSM (Lin et al., ICCV 2019): TSN + a residual temporal shift (``block.shift`` slot) in every block of
  the chosen stages (``model.temporal_stages``, every ``model.temporal_every``-th block, as the official
  ``n_round``).
- TANet (Liu et al., ICCV 2021): TSN + a TAM after conv1 -> bn1 -> relu (``block.temporal`` slot) of every
  block of layer1..layer4 (same placement keys); combinable with any attention gate of the backbone.

The module's options (TAM ``alpha``, ``beta``, ``kernel_size``; TSM ``shift_div``) come from
``model.temporal_kwargs``; absent ones keep the official defaults.

The classifier is a new ``nn.Linear`` (weights normal std 0.001, bias 0 as the official TSN wrapper); the
engine gives it the official fc learning-rate multipliers through the ``classifier`` attribute.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any, Literal

from torch import Tensor, nn

from video_attn.config.schema import ModelConfig
from video_attn.evaluation.action import average_views

from .temporal.registry import ACTION_TEMPORAL_MODULES, build_temporal_module, check_temporal_kwargs
from .temporal.tam import TAM
from .temporal.temporal_shift import TemporalShift

__all__ = ["Recognizer", "average_views", "build_recognizer", "insert_temporal_modules"]

logger = logging.getLogger(__name__)

# the slot of a residual block each in-block temporal module takes: the shift acts on the input of the
# residual branch (TSM's "residual shift"), TAM on the output of conv1 -> bn1 -> relu
BLOCK_SLOTS: dict[type[nn.Module], str] = {TemporalShift: "shift", TAM: "temporal"}


def _block_width(block: nn.Module) -> int:
    """Channels after conv1 -> bn1 of a residual block (where TAM sits)."""
    bn1 = getattr(block, "bn1", None)
    if isinstance(bn1, nn.modules.batchnorm._NormBase):
        return bn1.num_features
    conv1 = getattr(block, "conv1", None)
    if hasattr(conv1, "out_channels"):
        return conv1.out_channels
    # A BasicBlock whose conv1 replacement brings its own norm (bn1 is Identity): width = planes = bn2's.
    bn2 = getattr(block, "bn2", None)
    if getattr(block, "expansion", None) == 1 and isinstance(bn2, nn.modules.batchnorm._NormBase):
        return bn2.num_features
    raise ValueError(f"cannot infer the width after conv1 of block {type(block).__name__}")


def insert_temporal_modules(
    backbone: nn.Module,
    arch: str,
    num_segments: int,
    stages: list[int] | tuple[int, ...] = (1, 2, 3, 4),
    every: int = 1,
    temporal_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Put the temporal module of action arch ``arch`` (TAM, TemporalShift) into the blocks of ``backbone``.

    Block ``i`` (0-based) of each chosen stage (1-based) gets a module when ``i % every == 0``. The module is
    built with ``num_segments``, the block width after conv1 (``in_channels``) when it takes one, and
    ``temporal_kwargs``. Returns the number of modules inserted (0 for ``tsn``).
    """
    if arch not in ACTION_TEMPORAL_MODULES:
        raise ValueError(
            f"model.arch={arch!r} is not an action architecture; valid: {', '.join(ACTION_TEMPORAL_MODULES)}"
        )
    if every < 1:
        raise ValueError(f"model.temporal_every must be >= 1, got {every}")
    bad = [s for s in stages if s not in (1, 2, 3, 4)]
    if bad:
        raise ValueError(f"model.temporal_stages has {bad}; valid stages are 1, 2, 3, 4")
    module_cls = ACTION_TEMPORAL_MODULES[arch]
    kwargs = dict(temporal_kwargs or {})
    takes_width = module_cls is not None and "in_channels" in inspect.signature(module_cls).parameters
    supplied = ("in_channels", "num_segments") if takes_width else ("num_segments",)
    check_temporal_kwargs(arch, module_cls, kwargs, supplied)
    if module_cls is None:
        return 0
    count = 0
    for stage_index, stage in enumerate(backbone.stages, start=1):
        if stage_index not in stages:
            continue
        for i, block in enumerate(stage):
            if i % every:
                continue
            width = {"in_channels": _block_width(block)} if takes_width else {}
            module = build_temporal_module(arch, module_cls, kwargs, num_segments=num_segments, **width)
            setattr(block, BLOCK_SLOTS[module_cls], module)
            count += 1
    return count


class Recognizer(nn.Module):
    """Per-frame backbone, dropout, new classifier, average over segments.

    Args:
        backbone: a ResNet mapping (N*T, 3, H, W) to pooled features (N*T, backbone.num_features).
        num_classes: classes K.
        num_segments: frames T per clip the temporal modules were built for.
        dropout: dropout before the classifier (official TSN wrapper: Dropout then new_fc).
        arch: ``tsn`` (any T accepted at inference), ``tsm`` / ``tanet`` (T fixed to ``num_segments``).

    Shape: forward (N, T, 3, H, W) -> logits (N, K).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        num_segments: int,
        dropout: float = 0.5,
        arch: str = "tsn",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"model.num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
        self.arch = arch
        self.num_classes = num_classes
        self.num_segments = num_segments
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(backbone.num_features, num_classes)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"{self.arch} expects clips (N, T, 3, H, W), got shape {tuple(x.shape)}")
        n, t = x.shape[:2]
        if self.arch != "tsn" and t != self.num_segments:
            raise ValueError(
                f"{self.arch} was built for num_segments={self.num_segments} frames per clip, got {t} "
                "(the temporal modules have a fixed number of segments)"
            )
        features = self.backbone(x.flatten(0, 1))
        logits = self.classifier(self.dropout(features))
        return logits.view(n, t, -1).mean(dim=1)

    def forward_views(self, clips: Tensor, average: Literal["logits", "softmax"] = "logits") -> Tensor:
        """Multi-view test: clips (N, V, T, 3, H, W) -> scores (N, K) averaged over the V views.

        ``average="logits"`` is the official TAM test, ``"softmax"`` the mmaction2 one.
        """
        if clips.dim() == 5:
            return self(clips)
        if clips.dim() != 6:
            raise ValueError(f"expected (N, V, T, 3, H, W) clips, got shape {tuple(clips.shape)}")
        n, v = clips.shape[:2]
        logits = self(clips.flatten(0, 1))
        return average_views(logits.view(n, v, -1), average)


def build_recognizer(model_cfg: ModelConfig) -> Recognizer:
    """Build TSN / TSM / TANet from the ``model`` section (``model.arch`` in tsn | tsm | tanet)."""
    from .backbones.resnet import build_backbone

    if model_cfg.arch not in ACTION_TEMPORAL_MODULES:
        raise ValueError(
            f"model.arch={model_cfg.arch!r} is not an action architecture; "
            f"valid: {', '.join(ACTION_TEMPORAL_MODULES)}"
        )
    if model_cfg.num_segments < 1:
        raise ValueError(f"model.num_segments must be >= 1, got {model_cfg.num_segments}")
    backbone = build_backbone(model_cfg.backbone)
    count = insert_temporal_modules(
        backbone,
        model_cfg.arch,
        model_cfg.num_segments,
        stages=model_cfg.temporal_stages,
        every=model_cfg.temporal_every,
        temporal_kwargs=model_cfg.temporal_kwargs,
    )
    if model_cfg.arch != "tsn":
        logger.info(
            "%s: %d temporal modules in stages %s (every %d), options %s",
            model_cfg.arch,
            count,
            model_cfg.temporal_stages,
            model_cfg.temporal_every,
            model_cfg.temporal_kwargs or "official defaults",
        )
    return Recognizer(
        backbone, model_cfg.num_classes, model_cfg.num_segments, model_cfg.dropout, model_cfg.arch
    )
