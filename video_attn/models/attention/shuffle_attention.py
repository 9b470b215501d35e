"""Shuffle Attention gate (Zhang & Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural
Networks", ICASSP 2021).

The C channels are split into G groups, each group into two halves X1, X2 of C/2G channels:

    X1' = X1 * sigmoid(cw * GAP(X1) + cb)                 channel branch (paper eq. 1-2)
    X2' = X2 * sigmoid(sw * GN(X2) + sb)                  spatial branch (paper eq. 3)

with GN = GroupNorm(C/2G, C/2G) (one group per channel) and cw, cb, sw, sb of shape (1, C/2G, 1, 1) shared
by all G groups, initialised 0, 1, 0, 1 (so every gate is sigmoid(1) at init). The halves are concatenated,
the groups merged back to (B, C, H, W), and channels are shuffled with 2 groups: output channel 2j + i comes
from channel i * C/2 + j. 3C/G parameters per layer: +708 on ResNet-50 with G = 64.
Input / output (B, C, H, W); requires C % 2G == 0 (``groups="auto"`` picks the largest valid G <= 64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    def _gate_halves(
        self, x1: torch.Tensor, x2: torch.Tensor, view: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both branches on the two halves; ``view`` reshapes the (1, C/2G, 1, 1) parameters to broadcast."""
        cw, cb = self.cweight.view(view), self.cbias.view(view)
        y1 = x1 * torch.sigmoid(cw * x1.mean((-2, -1), keepdim=True) + cb)
        half = x2.shape[-3]
        # sw * (gn_w * n + gn_b) + sb folded into GroupNorm's own affine: one op instead of three passes
        weight = self.gn.weight * self.sweight.flatten()
        bias = self.gn.bias * self.sweight.flatten() + self.sbias.flatten()
        z = F.group_norm(x2.reshape(-1, half, *x2.shape[-2:]), half, weight, bias, self.gn.eps)
        # in place is safe for autograd: GroupNorm's backward does not use its output
        y2 = x2 * z.sigmoid_().view(x2.shape)
        return y1, y2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g, half = self.groups, c // (2 * self.groups)
        if g % 2:
            # the 2-way shuffle splits a group: concatenate the branches, then shuffle (one extra copy)
            xg = x.reshape(b * g, 2 * half, h, w)
            y1, y2 = self._gate_halves(xg[:, :half], xg[:, half:], (1, half, 1, 1))
            return channel_shuffle(torch.cat([y1, y2], dim=1).reshape(b, c, h, w), 2)
        # channel k = i * C/2 + g2 * C/G + branch * C/2G + q, i < 2, g2 < G/2: the shuffle sends it to output
        # channel 2 (k mod C/2) + i, so stacking the branches in (g2, branch, q, i) order writes the shuffled
        # output directly, without the concatenated intermediate
        xv = x.reshape(b, 2, g // 2, 2, half, h, w)
        y1, y2 = self._gate_halves(xv[:, :, :, 0], xv[:, :, :, 1], (half, 1, 1))
        order = (0, 2, 3, 1, 4, 5)  # (b, i, g2, q, h, w) -> (b, g2, q, i, h, w)
        return torch.stack([y1.permute(order), y2.permute(order)], dim=2).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
