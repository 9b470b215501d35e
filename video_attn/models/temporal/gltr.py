"""GLTR: Global-Local Temporal Representations (Li et al., ICCV 2019, arXiv 1908.10049).

Implements the released code (ljn114514/GLTR), not a re-reading of the paper:

* frame embedding ``Linear(in_channels -> embed_dim)`` (kaiming fan_out, bias 0), no BN / ReLU after it;
* DTP, dilated temporal pyramid (paper Eq. 2-3): one temporal conv per dilation rate d,
  ``Conv1d(embed_dim, embed_dim, 3, dilation=d, padding=d, bias=False)``, init N(0, 0.001^2); the length is
  kept. The official code writes each as ``Conv2d(1, embed_dim, (3, embed_dim))`` over the (T x embed_dim)
  map, which is the same operator (``conv1d.weight[o, c, k] == conv2d.weight[o, 0, k, c]``).
  The paper speaks of increasing rates; the released code uses (1, 2, 3), the default here;
* concatenation ``[raw, d_1, ..., d_n]`` along channels -> ``(B, (n + 1) * embed_dim, T)``;
* TSA, temporal self-attention (paper Eq. 4-5): a 1-D non-local block, theta / phi / g ``Conv1d(C -> C/2, 1)``
  WITH bias, ``f = softmax(theta^T phi)`` over the last axis with no 1/sqrt(d) scaling, ``y = f g``,
  ``W = Conv1d(C/2 -> C, 1) + BatchNorm1d(C)`` with BN weight and bias 0 so the block starts as identity,
  ``z = W(y) + x``; no dropout;
* tracklet feature = mean over T.

Input ``(B, T, in_channels)`` per-frame pooled backbone features; output ``(B, (len(dilations) + 1) *
embed_dim)`` (512 with the defaults). Any T >= 1 works (the official test embeds whole tracklets, T up to
920).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from video_attn.models.attention.probe import AttentionProbe


class TemporalNonLocal(nn.Module):
    """1-D embedded-Gaussian non-local block as in the official GLTR code (TSA).

    Input and output ``(B, C, T)``. ``inter_channels`` defaults to ``C // 2``.
    Probe (:mod:`video_attn.models.attention.probe`): ``probe`` carries the attention ``f`` (B, T, T), row
    ``t`` the weights frame ``t`` gives every frame (rows sum to 1), kind ``temporal_attention``.
    """

    def __init__(self, channels: int, inter_channels: int | None = None) -> None:
        super().__init__()
        inter = inter_channels or max(channels // 2, 1)
        self.channels = channels
        self.inter_channels = inter
        self.g = nn.Conv1d(channels, inter, kernel_size=1)
        self.theta = nn.Conv1d(channels, inter, kernel_size=1)
        self.phi = nn.Conv1d(channels, inter, kernel_size=1)
        self.W = nn.Sequential(nn.Conv1d(inter, channels, kernel_size=1), nn.BatchNorm1d(channels))
        # zero BN affine: W(y) == 0 at init, so the block is the identity and training starts from DTP.
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)
        self.probe = AttentionProbe("temporal_attention")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g_x = self.g(x).transpose(1, 2)  # (B, T, C')
        theta_x = self.theta(x).transpose(1, 2)  # (B, T, C')
        phi_x = self.phi(x)  # (B, C', T)
        attn = self.probe(torch.softmax(torch.bmm(theta_x, phi_x), dim=-1))  # (B, T, T), rows sum to 1
        y = torch.bmm(attn, g_x).transpose(1, 2)  # (B, C', T)
        return self.W(y) + x


class GLTR(nn.Module):
    """Global-Local Temporal Representation: frame embedding -> DTP -> TSA -> temporal mean.

    Args:
        in_channels: per-frame feature size (2048 for ResNet-50).
        embed_dim: frame embedding size (128 in the official code).
        dilations: DTP dilation rates, one temporal conv each (official code: 1, 2, 3).
        num_tsa_blocks: stacked non-local blocks (official: 1).

    Shapes: ``(B, T, in_channels) -> (B, (len(dilations) + 1) * embed_dim)``.
    """

    def __init__(
        self,
        in_channels: int = 2048,
        embed_dim: int = 128,
        dilations: Sequence[int] = (1, 2, 3),
        num_tsa_blocks: int = 1,
    ) -> None:
        super().__init__()
        if not dilations:
            raise ValueError("GLTR needs at least one DTP dilation rate")
        if any(int(d) < 1 for d in dilations):
            raise ValueError(f"GLTR dilations must be >= 1, got {list(dilations)}")
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.dilations = tuple(int(d) for d in dilations)
        self.out_channels = (len(self.dilations) + 1) * embed_dim

        self.embed = nn.Linear(in_channels, embed_dim)
        nn.init.kaiming_normal_(self.embed.weight, mode="fan_out")
        nn.init.zeros_(self.embed.bias)
        self.dtp = nn.ModuleList(
            nn.Conv1d(embed_dim, embed_dim, kernel_size=3, dilation=d, padding=d, bias=False)
            for d in self.dilations
        )
        for conv in self.dtp:
            nn.init.normal_(conv.weight, std=0.001)
        self.tsa = nn.Sequential(*(TemporalNonLocal(self.out_channels) for _ in range(num_tsa_blocks)))

    def forward_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, in_channels) -> (B, out_channels, T)``: per-time features after DTP and TSA."""
        if x.dim() != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"GLTR expects (B, T, {self.in_channels}), got {tuple(x.shape)}")
        f = self.embed(x).transpose(1, 2)  # (B, embed_dim, T)
        pyramid = [f] + [conv(f) for conv in self.dtp]
        return self.tsa(torch.cat(pyramid, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_sequence(x).mean(dim=2)
