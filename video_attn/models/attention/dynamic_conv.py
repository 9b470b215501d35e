"""Dynamic convolution (Chen et al., "Dynamic Convolution: Attention over Convolution Kernels", CVPR 2020,
arXiv 1912.03458)."""

from __future__ import annotations

import torch
from torch import nn

from .cond_conv import MixedKernelConv2d
from .probe import AttentionProbe


class DynamicConv2d(MixedKernelConv2d):
    """Dynamic convolution: replaces a block's 3x3 conv with an attention-weighted sum of ``num_kernels``.

    Chen et al.: ``pi(x) = softmax(FC2(ReLU(FC1(GAP(x)))) / tau)`` over the K kernels,
    ``W(x) = sum_k pi_k W_k``, ``b(x) = sum_k pi_k b_k``. FC1 reduces ``in_channels`` by ``reduction`` (4)
    to ``hidden_channels = max(in_channels // reduction, min_hidden)``; both FCs have a bias (SE-style
    squeeze; the paper does not say). K = 4. The conv has no bias by default because a BN follows it in a
    ResNet block (the paper's kernels have biases; ``bias=True`` restores them).

    Temperature: ``tau`` starts at ``temperature`` (30) and the training engine anneals it (30 -> 1 over the
    first 10 epochs, as the paper trains) by calling :meth:`set_temperature` every epoch. ``tau`` is a
    persistent buffer, so a checkpoint restores the value it was trained to and evaluation uses it.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H', W')``. ``includes_norm_act = False``.
    ``torch.compile``: works; a new batch size recompiles (the grouped conv's group count depends on it).
    Probe (:mod:`.probe`): ``probe`` carries the kernel attention ``pi`` (B, num_kernels), kind ``branch``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        num_kernels: int = 4,
        reduction: int = 4,
        min_hidden: int = 4,
        hidden_channels: int | None = None,
        temperature: float = 30.0,
        bias: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"DynamicConv2d temperature must be > 0, got {temperature}")
        super().__init__(
            in_channels, out_channels, kernel_size, stride, dilation, groups, num_kernels, bias, device, dtype
        )
        self.num_kernels = num_kernels
        if hidden_channels is None:
            hidden_channels = max(in_channels // reduction, min_hidden)
        self.fc1 = nn.Linear(in_channels, hidden_channels, device=device, dtype=dtype)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden_channels, num_kernels, device=device, dtype=dtype)
        self.register_buffer("temperature", torch.tensor(float(temperature), device=device))
        self.probe = AttentionProbe("branch")

    def set_temperature(self, t: float) -> None:
        """Set the softmax temperature ``tau`` (> 0) used from the next forward on."""
        if not t > 0:
            raise ValueError(f"DynamicConv2d temperature must be > 0, got {t}")
        self.temperature.fill_(float(t))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel attention ``pi`` (B, num_kernels), rows summing to 1."""
        logits = self.fc2(self.act(self.fc1(x.mean(dim=(2, 3)))))
        # softmax in at least float32: at tau = 30 the bf16 logits / tau would lose most of their resolution
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        pi = torch.softmax(logits.to(compute_dtype) / self.temperature.to(compute_dtype), dim=1)
        return pi.to(logits.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixed_conv(x, self.probe(self.attention(x)))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, num_kernels={self.num_kernels}, stride={self.stride}, "
            f"dilation={self.dilation}, groups={self.groups}, temperature={float(self.temperature):.3g}"
        )
