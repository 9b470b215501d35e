"""Split attention convolution (Zhang et al., "ResNeSt: Split-Attention Networks", arXiv 2004.08955)."""

from __future__ import annotations

import torch
from torch import nn

from video_attn.models.norm import GuardedBatchNorm2d

from .probe import AttentionProbe


class RadixSoftmax(nn.Module):
    """r-SoftMax of ResNeSt: softmax over the ``radix`` splits within each cardinal group;
    a sigmoid gate when ``radix == 1``.

    Input ``(B, cardinality * radix * C', 1, 1)`` laid out ``(cardinality, radix, C')`` as the grouped
    ``fc2`` produces it; output ``(B, radix * cardinality * C')`` laid out ``(radix, cardinality, C')``,
    matching the channel order of the radix splits of the main conv.
    """

    def __init__(self, radix: int, cardinality: int) -> None:
        super().__init__()
        self.radix = radix
        self.cardinality = cardinality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.radix > 1:
            x = x.reshape(b, self.cardinality, self.radix, -1).transpose(1, 2)
            return torch.softmax(x, dim=1).reshape(b, -1)
        return torch.sigmoid(x).reshape(b, -1)


class SplitAttn(nn.Module):
    """Split-attention conv ("splat"): replaces conv2 + bn2 + ReLU of a ResNet / ResNeSt bottleneck.

    ResNeSt split-attention block: ``U = ReLU(BN(conv_kxk(x)))`` with ``radix * C`` output channels and
    ``groups = cardinality * radix``; split ``U`` into ``radix`` chunks ``U_r``; ``s = GAP(sum_r U_r)``;
    ``z = ReLU(BN(fc1(s)))`` (1x1 conv with bias, grouped by cardinality) of width
    ``max(in_channels * radix // reduction_factor, min_attn_channels)`` (official rule: reduction 4, 32);
    ``a = rSoftMax(fc2(z))`` (1x1 conv with bias); ``V = sum_r a_r * U_r``.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H', W')``; ``groups`` is the cardinality.
    ``includes_norm_act = True``: the block drops its bn2 and the ReLU after it.
    Parameter names follow ``timm.layers.SplitAttn`` (conv, bn0, fc1, bn1, fc2), so its weights load here;
    timm rounds the attention width to a multiple of 8 (``make_divisible``), the official code does not.
    Works with ``torch.compile``, channels_last and bf16 autocast.
    Probe (:mod:`.probe`): ``probe`` carries the split weights ``a`` (B, radix, C, 1, 1), kind ``branch``.

    Args:
        radix: number of splits R (2 in resnest50).
        reduction_factor: divisor of ``in_channels * radix`` for the attention width (4).
        min_attn_channels: lower bound of the attention width (32).
        attn_channels: explicit attention width (overrides the rule above).
        bias: bias of the main conv (official ResNeSt blocks: False).
    """

    includes_norm_act = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        radix: int = 2,
        reduction_factor: int = 4,
        min_attn_channels: int = 32,
        attn_channels: int | None = None,
        bias: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if radix < 1:
            raise ValueError(f"SplitAttn radix must be >= 1, got {radix}")
        if in_channels % (groups * radix) or out_channels % groups:
            raise ValueError(
                f"SplitAttn: in_channels ({in_channels}) must be divisible by groups * radix "
                f"({groups} * {radix}) and out_channels ({out_channels}) by groups"
            )
        self.radix = radix
        self.out_channels = out_channels
        mid_channels = out_channels * radix
        if attn_channels is None:
            attn_channels = max(in_channels * radix // reduction_factor, min_attn_channels)
        if attn_channels % groups:
            raise ValueError(f"SplitAttn attention width {attn_channels} not divisible by groups {groups}")
        self.conv = nn.Conv2d(
            in_channels,
            mid_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=groups * radix,
            bias=bias,
            **dd,
        )
        self.bn0 = nn.BatchNorm2d(mid_channels, **dd)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_channels, attn_channels, 1, groups=groups, **dd)
        self.bn1 = GuardedBatchNorm2d(attn_channels, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn_channels, mid_channels, 1, groups=groups, **dd)
        self.rsoftmax = RadixSoftmax(radix, groups)
        self.probe = AttentionProbe("branch")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.act0(self.bn0(self.conv(x)))
        b, rc, h, w = u.shape
        splits = u.reshape(b, self.radix, rc // self.radix, h, w)
        s = splits.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        z = self.act1(self.bn1(self.fc1(s)))
        attn = self.probe(self.rsoftmax(self.fc2(z)).reshape(b, self.radix, rc // self.radix, 1, 1))
        return (splits * attn).sum(dim=1)
