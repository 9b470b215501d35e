"""Selective Kernel convolution (Li et al., "Selective Kernel Networks", CVPR 2019, arXiv 1903.06586)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from video_attn.models.norm import GuardedBatchNorm2d

from .probe import AttentionProbe


def _conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    dilation: int,
    groups: int,
    device=None,
    dtype=None,
) -> nn.Sequential:
    dd = {"device": device, "dtype": dtype}
    return nn.Sequential(
        OrderedDict(
            {
                "conv": nn.Conv2d(
                    in_channels,
                    out_channels,
                    kernel_size,
                    stride=stride,
                    padding=dilation * (kernel_size - 1) // 2,
                    dilation=dilation,
                    groups=groups,
                    bias=False,
                    **dd,
                ),
                "bn": nn.BatchNorm2d(out_channels, **dd),
                "act": nn.ReLU(inplace=True),
            }
        )
    )


class SelectiveKernelAttn(nn.Module):
    """Fuse and select steps of SK: ``s = GAP(sum_m U_m)``, ``z = ReLU(BN(W_r s))``, ``a = softmax_m(W_s z)``.

    Input ``(B, M, C, H, W)`` (the stacked branch outputs); output branch weights ``(B, M, C, 1, 1)`` that
    sum to 1 over ``M``. Both 1x1 convs have no bias (paper's fuse and select steps).
    """

    def __init__(self, channels: int, num_paths: int, attn_channels: int, device=None, dtype=None) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, kernel_size=1, bias=False, **dd)
        self.bn = GuardedBatchNorm2d(attn_channels, **dd)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, kernel_size=1, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, c = x.shape[:3]
        s = x.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        z = self.act(self.bn(self.fc_reduce(s)))
        logits = self.fc_select(z).reshape(b, m, c, 1, 1)
        return torch.softmax(logits, dim=1)


class SelectiveKernel(nn.Module):
    """Selective Kernel convolution: replaces a ResNet block's 3x3 conv (with its BN and ReLU).

    Li et al. CVPR'19, section 3.1 (split, fuse, select).
    Split: ``M`` branches ``U_m = ReLU(BN(conv_m(x)))``; by default a 3x3 conv and a "5x5" realised as a
    3x3 conv with dilation 2 (as the paper does).
    Fuse: ``s = GAP(sum_m U_m)``, ``z = ReLU(BN(W_r s))`` with ``d = max(C / reduction, min_attn_channels)``
    channels (paper: r = 16, L = 32).
    Select: ``a = softmax over m of W_s z`` per channel; ``V = sum_m a_m U_m``.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H', W')`` with ``H' = ceil(H / stride)``.
    ``includes_norm_act = True``: the block drops the BN + ReLU that followed its 3x3 conv.

    Differences from ``timm.layers.SelectiveKernel`` (same parameter names, so its weights load here):
    the attention width follows the paper's ``max(C/16, 32)`` (timm: ``make_divisible(C/16, 8)``), and the
    input is not split across branches by default (timm's ``split_input=True``; available as an option).
    ``groups`` is used as given (the paper uses 32 on ResNeXt; the ResNet default is 1).
    Works with ``torch.compile``, channels_last and bf16 autocast.
    Probe (:mod:`.probe`): ``probe`` carries the branch weights ``a`` (B, M, C, 1, 1), kind ``branch``.

    Args:
        in_channels / out_channels / kernel_size / stride / dilation / groups: as the replaced conv.
        kernel_sizes: branch kernels; default ``(kernel_size, kernel_size + 2)``, i.e. (3, 5). One entry per
            branch, so ``(3, 5, 7)`` gives three branches.
        keep_3x3: realise a k x k branch as a 3x3 conv with dilation ``(k - 1) // 2`` (paper default).
        split_input: feed each branch ``in_channels / M`` input channels (timm's variant).
        reduction: ``r`` of the fuse step (16).
        min_attn_channels: ``L`` of the fuse step (32).
        attn_channels: explicit fuse width ``d`` (overrides reduction / min_attn_channels).
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
        kernel_sizes: Sequence[int] | None = None,
        keep_3x3: bool = True,
        split_input: bool = False,
        reduction: int = 16,
        min_attn_channels: int = 32,
        attn_channels: int | None = None,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        kernel_sizes = list(kernel_sizes) if kernel_sizes is not None else [kernel_size, kernel_size + 2]
        if len(kernel_sizes) < 1 or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"SelectiveKernel kernel_sizes must be odd and >= 1, got {kernel_sizes}")
        if keep_3x3:
            dilations = [dilation * max(1, (k - 1) // 2) for k in kernel_sizes]
            kernel_sizes = [min(k, 3) for k in kernel_sizes]
        else:
            dilations = [dilation] * len(kernel_sizes)
        self.num_paths = len(kernel_sizes)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.split_input = split_input
        path_in = in_channels
        if split_input:
            if in_channels % self.num_paths:
                raise ValueError(
                    f"SelectiveKernel split_input needs in_channels ({in_channels}) divisible by the number "
                    f"of branches ({self.num_paths})"
                )
            path_in = in_channels // self.num_paths
        if path_in % groups or out_channels % groups:
            raise ValueError(
                f"SelectiveKernel groups={groups} must divide branch in ({path_in}) and out ({out_channels})"
            )
        self.paths = nn.ModuleList(
            [
                _conv_bn_act(path_in, out_channels, k, stride, d, groups, **dd)
                for k, d in zip(kernel_sizes, dilations)
            ]
        )
        if attn_channels is None:
            attn_channels = max(out_channels // reduction, min_attn_channels)
        self.attn = SelectiveKernelAttn(out_channels, self.num_paths, attn_channels, **dd)
        self.probe = AttentionProbe("branch")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_input:
            inputs = torch.split(x, self.in_channels // self.num_paths, dim=1)
            branches = [path(xi) for path, xi in zip(self.paths, inputs)]
        else:
            branches = [path(x) for path in self.paths]
        u = torch.stack(branches, dim=1)
        return (u * self.probe(self.attn(u))).sum(dim=1)
