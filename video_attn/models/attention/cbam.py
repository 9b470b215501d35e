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

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from video_attn.models.norm import GuardedBatchNorm2d

from .inner_graph import inner_grad, inner_graph
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


def _dense_like(x: torch.Tensor) -> torch.Tensor:
    """Uninitialised tensor like ``x``, contiguous or channels_last (so ``.view(B, C, H*W)`` works)."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_dense_format(x))


def _channel_dot(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_c a[b, c, h, w] * v[b, c]: (B, C, H, W), (B, C, 1, 1) -> (B, 1, H, W), one GEMV per sample."""
    b, c, h, w = a.shape
    return (v.view(b, 1, c).to(a.dtype) @ a.reshape(b, c, h * w)).view(b, 1, h, w)


def _spatial_dot(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_hw a[b, c, h, w] * v[b, h, w]: (B, C, H, W), (B, 1, H, W) -> (B, C, 1, 1), one GEMV per sample.

    Written as v^T A^T: ``A @ v`` with a (B, HW, 1) right operand takes a slow batched-GEMM path on CPU.
    """
    b, c, h, w = a.shape
    return (v.reshape(b, 1, h * w).to(a.dtype) @ a.reshape(b, c, h * w).mT).view(b, c, 1, 1)


def _channel_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.max(x, dim=1, keepdim=True)`` (values and first-occurrence indices) for (B, C, H, W), faster.

    ``torch.max`` with indices over channels runs a scalar loop on CPU (about ten times slower than
    ``amax``). Split the C channels into blocks of k: ``amax`` within each block (vectorised over
    positions), the indexed max over the C/k block maxima, and the indexed max inside the winning block
    only. The first block holding the maximum holds its first occurrence, so ties resolve as in
    ``torch.max``. Other devices use ``torch.max`` itself (one kernel there).
    """
    b, c, h, w = x.shape
    k = max(d for d in range(1, math.isqrt(c) + 1) if c % d == 0)
    if k == 1 or x.device.type != "cpu":
        return x.max(dim=1, keepdim=True)
    if _dense_format(x) is torch.channels_last:  # channels innermost: positions become the batch
        blocks = x.permute(0, 2, 3, 1).reshape(b * h * w, c // k, k, 1)
    else:
        blocks = x.reshape(b, c // k, k, h * w)
    p, _, _, q = blocks.shape
    values, block = blocks.amax(2).max(1, keepdim=True)  # (P, 1, Q)
    inside = blocks.gather(1, block.unsqueeze(2).expand(p, 1, k, q)).max(2).indices
    index = block * k + inside
    if q == 1:
        return values.view(b, h, w, 1).permute(0, 3, 1, 2), index.view(b, h, w, 1).permute(0, 3, 1, 2)
    return values.view(b, 1, h, w), index.view(b, 1, h, w)


class _CBAMTraining(torch.autograd.Function):
    """CBAM with autograd on: ``identity + Ms * (Mc * x)`` (``Ms * (Mc * x)`` when identity is None).

    One node for the block-sized work; the small maps in between keep autograd: the channel MLP on the
    pooled (2B, C) descriptors and the spatial conv + BN on the pooled (B, 2, H, W) maps are built in forward
    on detached leaves and differentiated in backward with ``torch.autograd.grad``, which returns the
    parameter gradients through this node. Backward, with P = dL/dy * x:

        dL/dMs = sum_c P * Mc                             (GEMV over channels)
        dL/dx' = dL/dy * Ms + [mean, max]_c backward        (x' = Mc * x; max at its argmax channel)
        dL/dMc = sum_hw (P * Ms + x * dmean / C) + max term (GEMVs over positions, gather at the argmax)
        dL/dx  = dL/dx' * Mc + [mean, max]_hw backward       (max at its argmax position)

    About a dozen passes over block-sized tensors in backward and one fresh block-sized tensor, reused for
    dL/dx; autograd through the equation (or separate nodes per step) makes about twenty passes and six
    allocations, and a fresh block-sized tensor is page-faulted on first touch on CPU. The output reuses
    the buffer of Mc * x, which backward does not need. The max poolings keep max pooling's single index
    per maximum (the official code's ``F.max_pool2d`` / ``torch.max``), not ``amax``'s tie sharing.
    Under ``torch.compile`` CBAM uses the plain equation instead (``CBAM._equation``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: torch.Tensor, identity: torch.Tensor | None, cbam: CBAM, n_channel: int, *params: torch.Tensor
    ) -> torch.Tensor:
        mx, index_s = F.adaptive_max_pool2d(x, 1, return_indices=True)
        with inner_graph():
            pooled_c = torch.cat([x.mean((2, 3)), mx.flatten(1)]).requires_grad_()
            mc = cbam.channel.from_pooled(pooled_c)
        gated = x * mc.detach()
        mx_c, index_c = _channel_max(gated)
        with inner_graph():
            pooled_s = (mx_c.requires_grad_(), gated.mean(dim=1, keepdim=True).requires_grad_())
            ms = cbam.spatial.from_pooled(*pooled_s)
        others = (ms,) if identity is None else (ms, identity)
        out = gated if can_overwrite(gated, *others) else None  # backward needs x, not Mc * x
        if identity is None:
            out = torch.mul(gated, ms.detach(), out=out)
        else:
            out = torch.addcmul(identity, gated, ms.detach(), out=out)
        ctx.save_for_backward(x, mc.detach(), ms.detach(), index_s, index_c)
        ctx.graphs = (pooled_c, mc, pooled_s, ms)
        ctx.saved_params, ctx.n_channel_params = params, n_channel  # params: channel gate's first
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, mc, ms, index_s, index_c = ctx.saved_tensors
        pooled_c, mc_graph, pooled_s, ms_graph = ctx.graphs
        params = ctx.saved_params
        b, c, h, w = x.shape
        # block-sized work in x's dtype (under autocast the gates or the incoming gradient may differ)
        grad_y, mc, ms = grad.to(x.dtype), mc.to(x.dtype), ms.to(x.dtype)
        product = torch.mul(grad_y, x, out=_dense_like(x))
        grads_s = inner_grad(ms_graph, _channel_dot(product, mc), pooled_s, params[ctx.n_channel_params :])
        grad_max_c, grad_mean_c = grads_s[0].to(x.dtype), grads_s[1].to(x.dtype) / c
        grad_mc = _spatial_dot(product, ms) + _spatial_dot(x, grad_mean_c)
        # the channel max's gradient reaches x' = Mc * x at its argmax channel only
        at_max = x.gather(1, index_c) * grad_max_c
        grad_mc.view(b, c).scatter_add_(1, index_c.view(b, h * w), at_max.view(b, h * w))
        grads_c = inner_grad(mc_graph, grad_mc, (pooled_c,), params[: ctx.n_channel_params])
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addcmul(grad_mean_c, grad_y, ms, out=product)  # dL/dx' (product is spent)
            grad_x.scatter_add_(1, index_c, grad_max_c)
            grad_mean_s, grad_max_s = grads_c[0].to(x.dtype).view(2, b, c, 1, 1).unbind()
            # mul_ + add_: addcmul with two (B, C, 1, 1) operands takes a slow unvectorised path on CPU
            grad_x.mul_(mc).add_(grad_mean_s / (h * w))
            grad_x.view(b, c, h * w).scatter_add_(2, index_s.view(b, c, 1), grad_max_s.view(b, c, 1))
        grad_identity = grad if ctx.needs_input_grad[1] else None
        return (grad_x, grad_identity, None, None, *grads_c[1:], *grads_s[2:])


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
        if torch.is_grad_enabled():
            return self.from_pooled(_SpatialMeanMax.apply(x))
        # amax: the fastest forward, no index to keep
        return self.from_pooled(torch.cat([x.mean((2, 3)), x.amax((2, 3))]))

    def from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Mc from the spatial mean (rows ``:B``) and max (rows ``B:``) of x: (2B, C) -> (B, C, 1, 1)."""
        # both descriptors go through the shared MLP as one batch
        b, c = pooled.shape[0] // 2, pooled.shape[1]
        z = F.relu(F.linear(pooled, self.fc1.weight.flatten(1), self.fc1.bias))
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
        pair = [mx, avg] if self.pool_order == "max_avg" else [avg, mx]
        # (B, 2, H, W) in channels_last: oneDNN's backward of this 2 -> 1 conv is 1.1-2.5x faster than on
        # contiguous NCHW on CPU (same values)
        pooled = torch.stack(pair, dim=-1).squeeze(1).permute(0, 3, 1, 2)
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

    def _inference(self, x: torch.Tensor, identity: torch.Tensor | None) -> torch.Tensor:
        """No-grad path: gated = Mc * x is written into x (the block's temporary) when ``identity`` is given
        and the dtype allows, then ``identity + Ms * gated`` into the same storage (``scale_add``)."""
        mc = self.channel.scale(x)
        gated = x.mul_(mc) if identity is not None and can_overwrite(x, mc) else x * mc
        ms = self.spatial.from_pooled(gated.amax(dim=1, keepdim=True), gated.mean(dim=1, keepdim=True))
        return gated * ms if identity is None else scale_add(identity, gated, ms)

    def _equation(self, x: torch.Tensor, identity: torch.Tensor | None) -> torch.Tensor:
        """Autograd through the written-out equation (used under ``torch.compile``, which fuses it)."""
        pooled = torch.cat([x.mean((2, 3)), F.adaptive_max_pool2d(x, 1).flatten(1)])
        gated = x * self.channel.from_pooled(pooled)
        ms = self.spatial.from_pooled(gated.max(dim=1, keepdim=True).values, gated.mean(dim=1, keepdim=True))
        return gated * ms if identity is None else torch.addcmul(identity, gated, ms)

    def _gated(self, x: torch.Tensor, identity: torch.Tensor | None) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self._inference(x, identity)
        if torch.compiler.is_compiling():  # dynamo cannot trace the node's inner graphs; inductor fuses this
            return self._equation(x, identity)
        channel = tuple(self.channel.parameters())
        return _CBAMTraining.apply(x, identity, self, len(channel), *channel, *self.spatial.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._gated(x, None)

    def gate_add(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """``identity + forward(x)`` with the spatial gate fused into the residual add; under no_grad ``x``
        (the block's temporary) holds both products, see ``scale_add``."""
        return self._gated(x, identity)
