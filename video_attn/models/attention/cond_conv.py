"""Conditionally parameterised convolution (Yang et al., "CondConv", NeurIPS 2019, arXiv 1904.04971)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .probe import AttentionProbe


def expert_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_shape: tuple[int, int, int, int],
    bias: torch.Tensor | None,
    mix: torch.Tensor,
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
) -> torch.Tensor:
    """Convolve each example with its own mixture of expert kernels, as one grouped convolution.

    ``x`` (B, C, H, W); ``weight`` (E, O * C / groups * k * k), the flattened experts of shape
    ``weight_shape = (O, C / groups, k, k)``; ``bias`` (E, O) or None; ``mix`` (B, E).
    Example ``b`` is convolved with ``sum_e mix[b, e] * weight[e]`` (and the same mixture of biases).
    Folding the batch into the channel axis (``groups * B`` groups over a ``(1, B * C, H, W)`` view) runs
    all per-example kernels in one call; the result equals a loop over examples.
    Returns (B, O, H', W'), channels_last when ``x`` is.
    """
    b, c, h, w = x.shape
    out_channels = weight_shape[0]
    kernel = torch.mm(mix, weight).reshape(b * out_channels, *weight_shape[1:])
    mixed_bias = torch.mm(mix, bias).reshape(-1) if bias is not None else None
    out = F.conv2d(
        x.reshape(1, b * c, h, w),
        kernel,
        mixed_bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups * b,
    )
    out = out.reshape(b, out_channels, out.shape[-2], out.shape[-1])
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def init_experts_(
    weight: torch.Tensor, weight_shape: tuple[int, int, int, int], bias: torch.Tensor | None
) -> None:
    """Initialise every expert like a fresh ``nn.Conv2d``: kaiming uniform (a = sqrt(5)) weights, biases
    uniform in +-1/sqrt(fan_in)."""
    for e in range(weight.shape[0]):
        nn.init.kaiming_uniform_(weight[e].view(weight_shape), a=math.sqrt(5))
    if bias is not None:
        fan_in = math.prod(weight_shape[1:])
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(bias, -bound, bound)


class MixedKernelConv2d(nn.Module):
    """Storage shared by :class:`CondConv2d` and ``DynamicConv2d``: ``num_kernels`` conv kernels (and
    biases), stored flattened as ``weight`` (num_kernels, out * in / groups * k * k) with ``weight_shape =
    (out, in / groups, k, k)``, each initialised like a fresh ``nn.Conv2d``, and the batched convolution with
    per-example mixtures of them (:func:`expert_conv2d`). Subclasses compute the mixture weights.
    """

    includes_norm_act = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        dilation: int,
        groups: int,
        num_kernels: int,
        bias: bool,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name} groups={groups} must divide in ({in_channels}) and out ({out_channels})"
            )
        if num_kernels < 1:
            raise ValueError(f"{name} needs at least one kernel, got {num_kernels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.groups = groups
        self.weight_shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        dd = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(num_kernels, math.prod(self.weight_shape), **dd))
        self.bias = nn.Parameter(torch.empty(num_kernels, out_channels, **dd)) if bias else None
        init_experts_(self.weight.data, self.weight_shape, None if self.bias is None else self.bias.data)

    def mixed_conv(self, x: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
        """Convolve each example of ``x`` with its own mixture (B, num_kernels) of the kernels."""
        return expert_conv2d(
            x, self.weight, self.weight_shape, self.bias, mixture, self.stride, self.padding, self.dilation,
            self.groups,
        )


class CondConv2d(MixedKernelConv2d):
    """CondConv: replaces a block's 3x3 conv with a per-example mixture of ``num_experts`` kernels.

    Yang et al.: ``W(x) = sum_i alpha_i(x) W_i`` with ``alpha = sigmoid(FC(GAP(x)))`` (a sigmoid per
    expert, not a softmax: the mixture weights need not sum to 1). The bias, if any, is mixed likewise.

    The paper computes one routing per block and shares it by the block's convs. Here only the 3x3 conv is
    replaced, so by default the routing comes from this conv's own input (``routing_fn``, a Linear with
    bias). A caller that shares a routing passes ``forward(x, routing)`` with ``routing`` (B, num_experts);
    with ``route_from_input=False`` the module has no router of its own and requires it.

    Default ``num_experts = 4`` (timm's ``CondConv2d`` default; the paper uses 4 or 8, 8 for its largest
    gains). Experts are stored flattened, ``weight`` (num_experts, out * in / groups * k * k) with
    ``weight_shape = (out, in / groups, k, k)``, as timm's ``CondConv2d`` does (so its weights load here,
    and ``model.to(memory_format=torch.channels_last)`` does not trip over a 5-D parameter).
    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H', W')``. ``includes_norm_act = False``.
    ``torch.compile``: works, but the grouped conv's group count depends on the batch size, so each new
    batch size recompiles (mark the batch dim dynamic or keep it fixed).
    Probe (:mod:`.probe`): ``probe`` carries the routing weights (B, num_experts), kind ``branch``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        num_experts: int = 4,
        bias: bool = False,
        route_from_input: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, dilation, groups, num_experts, bias, device, dtype
        )
        self.num_experts = num_experts
        self.probe = AttentionProbe("branch")
        self.routing_fn = None
        if route_from_input:
            self.routing_fn = nn.Linear(in_channels, num_experts, device=device, dtype=dtype)

    def routing(self, x: torch.Tensor) -> torch.Tensor:
        """Routing weights ``sigmoid(FC(GAP(x)))`` of shape (B, num_experts)."""
        if self.routing_fn is None:
            raise RuntimeError("CondConv2d built with route_from_input=False needs forward(x, routing)")
        return torch.sigmoid(self.routing_fn(x.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor, routing: torch.Tensor | None = None) -> torch.Tensor:
        if routing is None:
            routing = self.routing(x)
        elif routing.shape != (x.shape[0], self.num_experts):
            raise ValueError(
                f"CondConv2d routing must have shape (B={x.shape[0]}, {self.num_experts}), "
                f"got {tuple(routing.shape)}"
            )
        return self.mixed_conv(x, self.probe(routing))
