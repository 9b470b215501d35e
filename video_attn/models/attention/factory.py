"""Name -> module factories for the attention variants a ResNet block or stage can host.

Four kinds, four explicit registries (no decorators: a reader sees every name in this file):

- ``GATES``: ``cls(channels, **kwargs)``, ``forward(x) -> x-shaped``; sits after the last BN of the residual
  branch, before the add, as in the SE, ECA, CBAM and SA papers' ResNet integration:
  ``relu(gate(bn3(conv3(...))) + identity)``.
- ``CONVS``: ``cls(in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1, **kwargs)``;
  replaces the block's 3x3 conv. A class with ``includes_norm_act = True`` brings its own BN + ReLU, so the
  block drops its bn2 (kept as ``nn.Identity``) and the ReLU that followed it.
- ``RESIDUALS``: ``cls(channels, **kwargs)``, ``forward(branch, identity)`` replaces ``branch + identity``.
- ``STAGE_MODULES``: ``cls(channels, **kwargs)``, ``forward(x) -> x-shaped``; inserted after a whole stage
  (``stage_module`` / ``stage_module_kwargs`` of the backbone).

All constructors follow the timm calling convention: channels first, other options by keyword, and they
accept ``device=`` / ``dtype=`` factory kwargs.

Per-stage options (one rule, applied by :func:`resolve_stage_kwargs` in the backbone): a kwarg whose value
is a ``list`` with exactly one entry per stage (4 for ResNet) is resolved per stage: stage ``i`` (0-based,
``layer{i+1}``) receives ``value[i]``. Every other value (scalar, string, dict, tuple, list of another
length) is passed unchanged to every stage. Example: ``attention_kwargs={"k_size": [3, 5, 5, 7]}`` gives the
released ECA-ResNet-50 kernel sizes. A module that needs a literal 4-entry list in every stage receives it
as a per-stage list of lists, e.g. ``[[a, b, c, d]] * 4``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .cbam import CBAM, ChannelAttention, SpatialAttention
from .cond_conv import CondConv2d
from .dynamic_conv import DynamicConv2d
from .eca import ECA
from .global_self_attention import GlobalSelfAttention
from .highway import Highway
from .residual_attention import ResidualAttention
from .se import SqueezeExcite
from .selective_kernel import SelectiveKernel
from .shuffle_attention import ShuffleAttention
from .split_attention import SplitAttn

GATES: dict[str, type[nn.Module]] = {
    "se": SqueezeExcite,
    "eca": ECA,
    "cbam": CBAM,
    "channel_attn": ChannelAttention,
    "cbam_channel": ChannelAttention,
    "spatial_attn": SpatialAttention,
    "cbam_spatial": SpatialAttention,
    "sa": ShuffleAttention,
}

# 3x3 conv replacements: "sk", "splat", "condconv", "dynamic", "gsa" (filled by their own modules' authors)
CONVS: dict[str, type[nn.Module]] = {
    "sk": SelectiveKernel,
    "splat": SplitAttn,
    "condconv": CondConv2d,
    "dynamic": DynamicConv2d,
    "gsa": GlobalSelfAttention,
}

# replacements of the residual add: "highway"
RESIDUALS: dict[str, type[nn.Module]] = {
    "highway": Highway,
}

# modules inserted after a whole stage: "residual_attention"
STAGE_MODULES: dict[str, type[nn.Module]] = {
    "residual_attention": ResidualAttention,
}

_NONE_NAMES = (None, "none", "")


def _valid(registry: dict[str, type[nn.Module]], extra: tuple[str, ...]) -> str:
    return ", ".join(list(extra) + sorted(registry))


def create_attn(name: str | None, channels: int, **kwargs: Any) -> nn.Module | None:
    """Gate named ``name`` on ``channels`` channels; ``None`` for ``None`` / ``"none"``.

    Raises ValueError listing the valid names when ``name`` is unknown.
    """
    if name in _NONE_NAMES:
        return None
    if name not in GATES:
        raise ValueError(f"unknown attention {name!r}; valid: {_valid(GATES, ('none',))}")
    return GATES[name](channels, **kwargs)


def create_conv(
    name: str | None,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    **kwargs: Any,
) -> nn.Module:
    """The block's k x k conv: ``"none"`` gives torchvision's plain ``nn.Conv2d`` (padding keeps the size
    at stride 1, no bias); any other name a replacement from ``CONVS``."""
    if name in _NONE_NAMES:
        factory = {k: kwargs.pop(k) for k in ("device", "dtype") if k in kwargs}
        if kwargs:
            raise ValueError(f"conv 'none' takes no options, got {sorted(kwargs)}")
        return nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=groups,
            bias=False,
            **factory,
        )
    if name not in CONVS:
        raise ValueError(f"unknown conv {name!r}; valid: {_valid(CONVS, ('none',))}")
    return CONVS[name](
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=stride,
        dilation=dilation,
        groups=groups,
        **kwargs,
    )


def create_residual(name: str | None, channels: int, **kwargs: Any) -> nn.Module | None:
    """Replacement of ``branch + identity``; ``None`` for the standard add (``"standard"`` / ``"none"``)."""
    if name in _NONE_NAMES or name == "standard":
        return None
    if name not in RESIDUALS:
        raise ValueError(f"unknown residual {name!r}; valid: {_valid(RESIDUALS, ('standard',))}")
    return RESIDUALS[name](channels, **kwargs)


def create_stage_module(name: str | None, channels: int, **kwargs: Any) -> nn.Module | None:
    """Stage-level module (``forward(x) -> x-shaped``) placed after a ResNet stage; ``None`` for ``None`` /
    ``"none"``."""
    if name in _NONE_NAMES:
        return None
    if name not in STAGE_MODULES:
        raise ValueError(f"unknown stage module {name!r}; valid: {_valid(STAGE_MODULES, ('none',))}")
    return STAGE_MODULES[name](channels, **kwargs)


def resolve_stage_kwargs(kwargs: dict[str, Any] | None, stage_index: int, num_stages: int = 4) -> dict:
    """Options for stage ``stage_index`` (0-based): list values with ``num_stages`` entries are indexed,
    everything else is shared (the rule in the module docstring)."""
    if not 0 <= stage_index < num_stages:
        raise ValueError(f"stage_index {stage_index} outside [0, {num_stages})")
    out = {}
    for key, value in (kwargs or {}).items():
        if isinstance(value, list) and len(value) == num_stages:
            value = value[stage_index]
        out[key] = value
    return out


def resolve_stage_names(value: str | list[str] | None, key: str, num_stages: int = 4) -> list[str]:
    """One module name per stage from one name (all stages) or a list of ``num_stages`` names.

    ``key`` names the config key in the error (e.g. ``model.backbone.attention``).
    """
    if value is None:
        return ["none"] * num_stages
    if isinstance(value, str):
        return [value] * num_stages
    names = list(value)
    if len(names) != num_stages or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{key} must be one name or a list of {num_stages} names, got {value!r}")
    return names
