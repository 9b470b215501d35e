"""Squeeze-and-Excitation gate (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).

    z = GAP(x);  s = sigmoid(W2 relu(W1 z + b1) + b2);  y = s * x          (paper eq. 2-4)

Input / output (B, C, H, W). Defaults follow the official Caffe release: reduction r = 16 with
``C // r`` hidden units (timm rounds to a multiple of 8, the official code does not) and both FCs WITH bias,
which adds 2,530,992 parameters to ResNet-50. The FCs are 1x1 convs named ``fc1`` / ``fc2`` so weights
exchange directly with timm's ``SEModule``. Probe (:mod:`.probe`): ``probe`` carries ``s`` (B, C, 1, 1), kind
``channel``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .probe import AttentionProbe


class SqueezeExcite(nn.Module):
    """SE gate: ``forward(x (B, C, H, W)) -> (B, C, H, W)``.

    Args:
        channels: C.
        reduction: r; hidden width is ``max(1, channels // reduction)`` unless ``rd_channels`` is given.
        rd_channels: explicit hidden width.
        bias: bias on both FCs (official: True).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        rd_channels: int | None = None,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        rd = rd_channels if rd_channels is not None else max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=bias, **factory)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=bias, **factory)
        self.probe = AttentionProbe("channel")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(z))))
        return x * self.probe(s)
