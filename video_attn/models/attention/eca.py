"""Efficient Channel Attention gate (Wang et al., "ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks", CVPR 2020).

    z = GAP(x) (B, 1, C);  s = sigmoid(conv1d_k(z));  y = s * x             (paper eq. 4 with eq. 12)

A k-tap 1-D convolution across the channel axis (zero padding (k-1)/2, no bias): each channel's weight
comes from its k neighbouring channels. ``k_size="adaptive"`` is the paper's eq. 12,
k = t if t is odd else t + 1 with t = int(|(log2 C + b) / gamma|), gamma = 2, b = 1, giving ResNet-50
stages [5, 5, 5, 7] (+86 parameters). The released ECA-ResNet-50 checkpoint instead uses explicit per-stage
k = [3, 5, 5, 7] (+80, the paper's figure): pass ``k_size=[3, 5, 5, 7]`` as a per-stage backbone kwarg.
The conv is named ``conv`` so weights exchange with timm's ``EcaModule``. Probe (:mod:`.probe`): ``probe``
carries ``s`` (B, C, 1, 1), kind ``channel``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .probe import AttentionProbe


def adaptive_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA eq. 12: the odd kernel size nearest above |(log2 C + b) / gamma|."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """ECA gate: ``forward(x (B, C, H, W)) -> (B, C, H, W)``.

    Args:
        channels: C (needed for ``k_size="adaptive"``).
        k_size: ``"adaptive"`` (eq. 12) or an odd int.
        gamma, b: eq. 12 constants.
    """

    def __init__(
        self,
        channels: int,
        k_size: int | str = "adaptive",
        gamma: float = 2,
        b: float = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if k_size == "adaptive":
            k_size = adaptive_kernel_size(channels, gamma, b)
        if isinstance(k_size, bool) or not isinstance(k_size, int) or k_size < 1 or k_size % 2 == 0:
            raise ValueError(f"ECA k_size must be 'adaptive' or a positive odd int, got {k_size!r}")
        self.k_size = k_size
        self.conv = nn.Conv1d(1, 1, k_size, padding=(k_size - 1) // 2, bias=False, device=device, dtype=dtype)
        self.probe = AttentionProbe("channel")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        z = x.mean((2, 3)).view(b, 1, c)  # the channels become the 1-D conv's length axis
        s = torch.sigmoid(self.conv(z)).view(b, c, 1, 1)
        return x * self.probe(s)

    def extra_repr(self) -> str:
        return f"k_size={self.k_size}"
