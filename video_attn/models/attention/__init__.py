"""Attention modules for ResNet blocks and the factories that build them by name.

Gates (``create_attn``): SE, ECA, CBAM (and its channel / spatial halves), Shuffle Attention.
3x3 conv replacements (``create_conv``), residual replacements (``create_residual``) and stage modules
(``create_stage_module``) are registered in ``factory.CONVS``, ``RESIDUALS`` and ``STAGE_MODULES``.
Every module exposes what it applies through an :class:`AttentionProbe` (``probe``), which
``video_attn.models.attention_capture.AttentionRecorder`` records.
"""

from video_attn.models.norm import GuardedBatchNorm2d

from .cbam import CBAM, ChannelAttention, SpatialAttention
from .eca import ECA, adaptive_kernel_size
from .factory import (
    CONVS,
    GATES,
    RESIDUALS,
    STAGE_MODULES,
    create_attn,
    create_conv,
    create_residual,
    create_stage_module,
    resolve_stage_kwargs,
    resolve_stage_names,
)
from .probe import PROBE_KINDS, AttentionProbe
from .se import SqueezeExcite
from .shuffle_attention import ShuffleAttention, auto_groups, channel_shuffle

__all__ = [
    "PROBE_KINDS",
    "CBAM",
    "CONVS",
    "ECA",
    "AttentionProbe",
    "GATES",
    "RESIDUALS",
    "STAGE_MODULES",
    "ChannelAttention",
    "GuardedBatchNorm2d",
    "ShuffleAttention",
    "SpatialAttention",
    "SqueezeExcite",
    "adaptive_kernel_size",
    "auto_groups",
    "channel_shuffle",
    "create_attn",
    "create_conv",
    "create_residual",
    "create_stage_module",
    "resolve_stage_kwargs",
    "resolve_stage_names",
]
