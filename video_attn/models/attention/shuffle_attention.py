"""Shuffle Attention gate (Zhang & Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural
Networks", ICASSP 2021), as the official ``sa_layer`` (wofmanaf/SA-Net).

The C channels are split into G groups, each group into two halves X1, X2 of C/2G channels:

    X1' = X1 * sigmoid(cw * GAP(X1) + cb)                 channel branch (paper eq. 1-2)
    X2' = X2 * sigmoid(sw * GN(X2) + sb)                  spatial branch (paper eq. 3)

with GN = GroupNorm(C/2G, C/2G) (one group per channel, affine weight 1 / bias 0) and cw, cb, sw, sb of shape
(1, C/2G, 1, 1) shared by all G groups, initialised 0, 1, 0, 1 (so every gate is sigmoid(1) at init). The
halves are concatenated, the groups merged back to (B, C, H, W), and channels are shuffled with 2 groups:
output channel 2j + i comes from channel i * C/2 + j. 3C/G parameters per layer: +708 on ResNet-50 with
G = 64 (official). Input / output (B, C, H, W); requires C % 2G == 0 (``groups="auto"`` picks the largest
valid G <= 64).

Probes (:mod:`.probe`), the gates per sample in group-major order (channel ``g * C/2G + j`` is channel
``j`` of group ``g``'s half): ``channel_probe`` (B, C/2, 1, 1), kind ``channel``; ``spatial_probe``
(B, C/2, H, W), kind ``spatial``.
"""

from __future__ import annotations

import torch
from torch import nn

from .probe import AttentionProbe


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: (B, g*n, H, W) -> view (B, g, n) -> transpose -> (B, n*g, H, W)."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def auto_groups(channels: int, max_groups: int = 64) -> int:
    """Largest G <= max_groups with channels % (2 G) == 0."""
    for g in range(max_groups, 0, -1):
        if channels % (2 * g) == 0:
            return g
    raise ValueError(f"shuffle attention needs an even channel count, got {channels}")


class ShuffleAttention(nn.Module):
    """SA gate: ``forward(x (B, C, H, W)) -> (B, C, H, W)``.

    Args:
        channels: C.
        groups: G (official 64) or ``"auto"``.
        eps: GroupNorm epsilon.
    """

    def __init__(
        self,
        channels: int,
        groups: int | str = 64,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if groups == "auto":
            groups = auto_groups(channels)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"shuffle attention groups must be a positive int or 'auto', got {groups!r}")
        if channels % (2 * groups) != 0:
            raise ValueError(
                f"shuffle attention needs channels % (2 * groups) == 0, got channels={channels}, "
                f"groups={groups}; use groups='auto' to pick the largest valid G"
            )
        factory = {"device": device, "dtype": dtype}
        self.groups = groups
        half = channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1, **factory))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1, **factory))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1, **factory))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1, **factory))
        self.gn = nn.GroupNorm(half, half, eps=eps, **factory)
        self.channel_probe = AttentionProbe("channel")
        self.spatial_probe = AttentionProbe("spatial")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, c // self.groups, h, w)  # every group becomes a sample
        x1, x2 = x.chunk(2, dim=1)
        # under autocast the float32 parameters (and GroupNorm, run in float32) would promote the output:
        # the gates take x's dtype, so SA keeps its input's dtype as the other gates do
        cgate = torch.sigmoid(self.cweight * x1.mean((2, 3), keepdim=True) + self.cbias).to(x.dtype)
        sgate = torch.sigmoid(self.sweight * self.gn(x2) + self.sbias).to(x.dtype)
        # the probes see the gates per sample (B, C/2, ...), not per group-sample (B*G, C/2G, ...)
        x1 = x1 * self.channel_probe(cgate.reshape(b, -1, 1, 1)).reshape(cgate.shape)
        x2 = x2 * self.spatial_probe(sgate.reshape(b, -1, h, w)).reshape(sgate.shape)
        out = torch.cat([x1, x2], dim=1).reshape(b, c, h, w)
        return channel_shuffle(out, 2)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
