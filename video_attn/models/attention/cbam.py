"""Convolutional Block Attention Module (Woo et al., "CBAM: Convolutional Block Attention Module",
ECCV 2018), its two halves, and the batch-size-1-safe BatchNorm the gates use.

    channel:  Mc = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)));   x' = Mc * x          (paper eq. 2)
    spatial:  Ms = sigmoid(BN(conv7x7([MaxPool_c(x'), AvgPool_c(x')])));   y = Ms * x'  (paper eq. 3)

Input / output (B, C, H, W). Defaults follow the official code (Jongchan/attention-module), which differs
from the paper text and from popular re-implementations:
- the shared MLP C -> C/16 -> C has biases (blog versions: ``mlp_bias=False``);
- the spatial conv (2 -> 1, no bias) is followed by BatchNorm (momentum 0.01, weight initialised to 0, so
  the spatial gate is exactly 0.5 at init); blog versions drop it (``spatial_norm=False``);
- the pooled spatial descriptor is ordered [max, mean] (``pool_order="avg_max"`` gives [mean, max], the
  order of timm's ``CbamModule``).
With these defaults CBAM adds 2,532,592 parameters to ResNet-50.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from video_attn.models.norm import GuardedBatchNorm2d

from .scale_add import can_overwrite, scale_add


def _dense_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class _SpatialMeanMax(torch.autograd.Function):
    """(B, C, H, W) -> (2B, C): per-channel spatial mean (rows ``:B``) and max (rows ``B:``).

    Backward writes the mean's gradient into one new tensor and scatter-adds the max's gradient at the
    argmax (B*C elements); autograd's own backward builds two block-sized tensors (expand / HW, and zeros
    plus scatter) and adds them. The max keeps max pooling's one index per channel (``amax`` would share
    the gradient among ties and needs an equality mask over the whole input in backward).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mx, index = F.adaptive_max_pool2d(x, 1, return_indices=True)
        ctx.save_for_backward(index)
        ctx.shape, ctx.memory_format = x.shape, _dense_format(x)
        return torch.cat([x.mean((2, 3)), mx.flatten(1)])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (index,) = ctx.saved_tensors
        b, c, h, w = ctx.shape
        grad_x = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=ctx.memory_format)
        grad_x.copy_((grad[:b] / (h * w)).view(b, c, 1, 1).expand(ctx.shape))
        grad_x.view(b, c, h * w).scatter_add_(2, index.view(b, c, 1), grad[b:].reshape(b, c, 1))
        return grad_x


class _GatedChannelPool(torch.autograd.Function):
    """(x (B, C, H, W), Mc (B, C, 1, 1)) -> (x' = Mc * x, max over C of x', mean over C of x').

    One node for the channel gating and the spatial gate's channel pooling. Backward sums the gradients
    reaching x' (from the output, the max at its argmax channel, the mean) into one tensor before applying
    the chain rule of the product, instead of autograd's separate block-sized gradients and their adds.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, mc: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        gated = x * mc
        mx, index = gated.max(dim=1, keepdim=True)
        ctx.save_for_backward(x, mc, index)
        return gated, mx, gated.mean(dim=1, keepdim=True)

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx, grad_gated: torch.Tensor, grad_max: torch.Tensor, grad_mean: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, mc, index = ctx.saved_tensors
        grad = torch.add(grad_gated, grad_mean, alpha=1.0 / x.shape[1])
        grad.scatter_add_(1, index, grad_max)
        grad_mc = (grad * x).sum((2, 3), keepdim=True) if ctx.needs_input_grad[1] else None
        return grad.mul_(mc), grad_mc


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
        # 1x1 convs (not Linear) so the keys and shapes match timm's ChannelAttn
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=mlp_bias, **factory)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=mlp_bias, **factory)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate Mc, shape (B, C, 1, 1)."""
        b, c = x.shape[:2]
        # both descriptors go through the shared MLP as one (2B, C) batch
        if torch.is_grad_enabled():
            z = _SpatialMeanMax.apply(x)
        else:  # amax: the fastest forward, no index to keep
            z = torch.cat([x.mean((2, 3)), x.amax((2, 3))])
        z = F.relu(F.linear(z, self.fc1.weight.flatten(1), self.fc1.bias))
        z = F.linear(z, self.fc2.weight.flatten(1), self.fc2.bias)
        return torch.sigmoid(z[:b] + z[b:]).view(b, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale(x)

    def gate_add(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """``identity + forward(x)`` in one fused pass; may overwrite ``x`` under no_grad (``scale_add``)."""
        return scale_add(identity, x, self.scale(x))


class SpatialAttention(nn.Module):
    """CBAM spatial gate: ``forward(x (B, C, H, W)) -> (B, C, H, W)``.

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

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial gate Ms, shape (B, 1, H, W)."""
        # max with indices in training: its backward scatters, amax's builds an equality mask over x
        mx = x.max(dim=1, keepdim=True).values if torch.is_grad_enabled() else x.amax(dim=1, keepdim=True)
        return self.from_pooled(mx, x.mean(dim=1, keepdim=True))

    def from_pooled(self, mx: torch.Tensor, avg: torch.Tensor) -> torch.Tensor:
        """Ms from the channel max and mean maps (B, 1, H, W) each."""
        pooled = torch.cat([mx, avg] if self.pool_order == "max_avg" else [avg, mx], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale(x)

    def gate_add(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """``identity + forward(x)`` in one fused pass; may overwrite ``x`` under no_grad (``scale_add``)."""
        return scale_add(identity, x, self.scale(x))


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

    def _gates(self, x: torch.Tensor, overwrite: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(x' = Mc * x, Ms); with ``overwrite`` (no_grad only) x' is written into x."""
        mc = self.channel.scale(x)
        if torch.is_grad_enabled():
            gated, mx, avg = _GatedChannelPool.apply(x, mc)
            return gated, self.spatial.from_pooled(mx, avg)
        gated = x.mul_(mc) if overwrite and can_overwrite(x, mc) else x * mc
        mx, avg = gated.amax(dim=1, keepdim=True), gated.mean(dim=1, keepdim=True)
        return gated, self.spatial.from_pooled(mx, avg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated, ms = self._gates(x, overwrite=False)
        return gated * ms

    def gate_add(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """``identity + forward(x)`` with the spatial gate fused into the residual add; under no_grad ``x``
        (the block's temporary) holds both products, see ``scale_add``."""
        gated, ms = self._gates(x, overwrite=True)
        return scale_add(identity, gated, ms)
