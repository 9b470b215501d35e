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
Both branches are computed on views of the input in shuffled channel order, so no concatenated or shuffled
copy is made; under ``torch.no_grad`` the gated halves (and, through ``gate_add``, the residual add) are
written straight into the output, and GroupNorm's statistics come from the strided views.
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

    def _gates(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel gate of X1 (one value per sample and channel) and the full-size spatial gate of X2.

        ``x1``, ``x2``: (..., C/2G, H, W) views; the result broadcasts against them.
        """
        half, h, w = x2.shape[-3:]
        cw, cb, sw, sb = (p.view(half, 1, 1) for p in (self.cweight, self.cbias, self.sweight, self.sbias))
        gate1 = torch.sigmoid(cw * x1.mean((-2, -1), keepdim=True) + cb).to(x1.dtype)
        gn_weight, gn_bias = self.gn.weight.view(half, 1, 1), self.gn.bias.view(half, 1, 1)
        if torch.is_grad_enabled():
            # training: GroupNorm's fused backward is far cheaper than autograd through the statistics below;
            # sw * (gn_w * n + gn_b) + sb folded into GroupNorm's own affine
            z = F.group_norm(
                x2.reshape(-1, half, h, w),
                half,
                (gn_weight * sw).flatten(),
                (gn_bias * sw + sb).flatten(),
                self.gn.eps,
            )
            # in place is safe for autograd: GroupNorm's backward does not use its output
            return gate1, z.sigmoid_().view(x2.shape)
        # inference: GroupNorm(C/2G, C/2G) normalises each channel on its own, so sw * GN(x2) + sb equals
        # a * x2 + s with one (a, s) per sample and channel: statistics straight from the strided view (no
        # reshaped copy; two passes, as torch.var_mean is far slower on CPU), then one pass for the gate
        stats = x2 if x2.dtype in (torch.float32, torch.float64) else x2.float()
        mean = stats.mean((-2, -1), keepdim=True)
        var = torch.linalg.vector_norm(stats - mean, dim=(-2, -1), keepdim=True).square() / (h * w)
        slope = gn_weight * sw * torch.rsqrt(var + self.gn.eps)
        shift = gn_bias * sw + sb - slope * mean
        return gate1, torch.addcmul(shift.to(x2.dtype), slope.to(x2.dtype), x2).sigmoid_()

    def _gated(self, x: torch.Tensor, identity: torch.Tensor | None) -> torch.Tensor:
        c = x.shape[1]
        g, half = self.groups, c // (2 * self.groups)
        # unbind, not two indexing ops: one backward node stacks both gradients (no zero-filled copies)
        if g % 2:
            # the 2-way shuffle splits a group: gate in group order, then shuffle (one extra copy)
            x1, x2 = x.unflatten(1, (g, 2, half)).unbind(2)
            gate1, gate2 = self._gates(x1, x2)
            y = channel_shuffle(torch.stack([x1 * gate1, x2 * gate2], dim=2).flatten(1, 3), 2)
            return y if identity is None else y + identity
        # input channel i * C/2 + (g2 * 2 + branch) * C/2G + q, i < 2, g2 < G/2, goes to output channel
        # ((g2 * 2 + branch) * C/2G + q) * 2 + i: gating views indexed (g2, branch, i, q) of the input and of
        # the output writes the shuffled output directly (no concatenated intermediate, no shuffle copy)
        xs = x.unflatten(1, (2, g // 2, 2, half)).permute(0, 2, 3, 1, 4, 5, 6).unbind(2)
        gates = self._gates(*xs)
        if torch.is_grad_enabled():
            # out= has no autograd: stack the branches (one copy); the separate add passes the identity's
            # gradient straight through
            parts = [(xs[k] * gates[k]).transpose(2, 3) for k in (0, 1)]  # (B, G/2, q, i, H, W)
            y = torch.stack(parts, dim=2).flatten(1, 4)
            return y if identity is None else y + identity
        # inference: each branch writes its slots of the output in place, fused with the residual add
        out = torch.empty_like(x)
        slots = out.unflatten(1, (g // 2, 2, half, 2)).transpose(3, 4).unbind(2)
        if identity is None:
            for k in (0, 1):
                torch.mul(xs[k], gates[k], out=slots[k])
        else:
            ids = identity.unflatten(1, (g // 2, 2, half, 2)).transpose(3, 4).unbind(2)
            for k in (0, 1):
                torch.addcmul(ids[k], xs[k], gates[k], out=slots[k])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._gated(x, None)

    def gate_add(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """``identity + forward(x)`` with the residual add fused into the gating pass."""
        return self._gated(x, identity)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
