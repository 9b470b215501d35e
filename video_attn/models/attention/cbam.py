"""Convolutional Block Attention Module (Woo et al., "CBAM: Convolutional Block Attention Module",
ECCV 2018) and its two halves.

    channel:  Mc = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)));   x' = Mc * x          (paper eq. 2)
    spatial:  Ms = sigmoid(BN(conv7x7([MaxPool_c(x'), AvgPool_c(x')])));   y = Ms * x'  (paper eq. 3)

Input / output (B, C, H, W). Defaults follow the official code (Jongchan/attention-module), which differs
from the paper text and from popular re-implementations:
- the shared MLP C -> C/16 -> C has biases (blog versions: ``mlp_bias=False``);
- the spatial conv (2 -> 1, 7x7, padding 3, no bias) is followed by BatchNorm (momentum 0.01, weight
  initialised to 0, so the spatial gate is exactly 0.5 at init); blog versions drop it
  (``spatial_norm=False``);
- the pooled spatial descriptor is ordered [max, mean] (``pool_order="avg_max"`` gives [mean, max], the
  order of timm's ``CbamModule``).
Probes (:mod:`.probe`): each half's ``probe`` carries its gate, ``Mc`` (B, C, 1, 1) (``channel``) and ``Ms``
(B, 1, H, W) (``spatial``), the tensors the input is multiplied by.
With these defaults CBAM adds 2,532,592 parameters to ResNet-50. The MLP layers are 1x1 convs named
``fc1`` / ``fc2`` so weights exchange with timm's ``ChannelAttn``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from video_attn.models.norm import GuardedBatchNorm2d

from .probe import AttentionProbe


class ChannelAttention(nn.Module):
    """CBAM channel gate: ``forward(x (B, C, H, W)) -> (B, C, H, W)``.

    Args:
        channels: C.
        reduction: MLP reduction r (hidden ``max(1, C // r)`` unless ``rd_channels``).
        mlp_bias: biases in the shared MLP (official: True).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        rd_channels: int | None = None,
        mlp_bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        rd = rd_channels if rd_channels is not None else max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=mlp_bias, **factory)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=mlp_bias, **factory)
        self.probe = AttentionProbe("channel")

    def mlp(self, z: torch.Tensor) -> torch.Tensor:
        """The shared MLP on a pooled (B, C, 1, 1) descriptor."""
        return self.fc2(F.relu(self.fc1(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # max pooling as the official code (one gradient index per channel), not amax
        mc = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        return x * self.probe(mc)


class SpatialAttention(nn.Module):
    """CBAM spatial gate: ``forward(x (B, C, H, W)) -> (B, C, H, W)``.

    The BN is batch-size-1 safe (:class:`GuardedBatchNorm2d`: a 1x1 map at batch 1 has one value).

    Args:
        channels: C (unused by the maths; kept for the common gate signature).
        kernel_size: spatial conv size (official 7).
        spatial_norm: BatchNorm after the conv (official True).
        pool_order: ``"max_avg"`` (official) or ``"avg_max"`` (timm / blog versions).
        bn_momentum: official 0.01 (PyTorch convention: weight of the new batch statistic).
        bn_zero_init: BN weight starts at 0 so the gate starts at 0.5 (official True).
    """

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int = 7,
        spatial_norm: bool = True,
        pool_order: Literal["max_avg", "avg_max"] = "max_avg",
        bn_momentum: float = 0.01,
        bn_zero_init: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if pool_order not in ("max_avg", "avg_max"):
            raise ValueError(f"CBAM pool_order must be 'max_avg' or 'avg_max', got {pool_order!r}")
        factory = {"device": device, "dtype": dtype}
        self.pool_order = pool_order
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False, **factory)
        self.bn: nn.Module = nn.Identity()
        if spatial_norm:
            self.bn = GuardedBatchNorm2d(1, momentum=bn_momentum, **factory)
            if bn_zero_init:
                nn.init.zeros_(self.bn.weight)
        self.probe = AttentionProbe("spatial")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mx, avg = x.max(dim=1, keepdim=True).values, x.mean(dim=1, keepdim=True)
        pooled = torch.cat([mx, avg] if self.pool_order == "max_avg" else [avg, mx], dim=1)
        ms = torch.sigmoid(self.bn(self.conv(pooled)))
        return x * self.probe(ms)

    def extra_repr(self) -> str:
        return f"pool_order={self.pool_order!r}"


class CBAM(nn.Module):
    """CBAM gate (channel then spatial): ``forward(x (B, C, H, W)) -> (B, C, H, W)``.

    Keyword options are those of :class:`ChannelAttention` (``reduction``, ``rd_channels``, ``mlp_bias``)
    and :class:`SpatialAttention` (``kernel_size``, ``spatial_norm``, ``pool_order``, ``bn_momentum``,
    ``bn_zero_init``).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        rd_channels: int | None = None,
        mlp_bias: bool = True,
        kernel_size: int = 7,
        spatial_norm: bool = True,
        pool_order: Literal["max_avg", "avg_max"] = "max_avg",
        bn_momentum: float = 0.01,
        bn_zero_init: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.channel = ChannelAttention(channels, reduction, rd_channels, mlp_bias, **factory)
        self.spatial = SpatialAttention(
            channels, kernel_size, spatial_norm, pool_order, bn_momentum, bn_zero_init, **factory
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))
