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
copy is made: the gated halves (and, through ``gate_add``, the residual add) are written straight into the
output. Under ``torch.no_grad`` GroupNorm's statistics come from the strided views; with autograd on (even G)
one custom autograd node does the block-sized work of forward and backward (``_ShuffleAttentionTraining``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .inner_graph import inner_grad, inner_graph


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


def _branch_views(t: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The channel-branch (X1) and spatial-branch (X2) views of a (B, C, H, W) tensor, for even G.

    Input channel i * C/2 + (g2 * 2 + branch) * C/2G + q (i < 2, g2 < G/2, q < C/2G) is element
    (g2, i, q) of the branch view: each view is (B, G/2, 2, C/2G, H, W). The 2-way shuffle sends that
    channel to output channel ((g2 * 2 + branch) * C/2G + q) * 2 + i, the same element of
    :func:`_shuffled_slots`' views of the output.
    """
    half = t.shape[1] // (2 * groups)
    x1, x2 = t.unflatten(1, (2, groups // 2, 2, half)).permute(0, 2, 3, 1, 4, 5, 6).unbind(2)
    return x1, x2


def _shuffled_slots(t: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The output-order counterparts of :func:`_branch_views`: where each branch's gated channels land."""
    half = t.shape[1] // (2 * groups)
    s1, s2 = t.unflatten(1, (groups // 2, 2, half, 2)).transpose(3, 4).unbind(2)
    return s1, s2


def _write_shuffled(
    xs: tuple[torch.Tensor, torch.Tensor],
    gates: tuple[torch.Tensor, torch.Tensor],
    identity: torch.Tensor | None,
    like: torch.Tensor,
    groups: int,
) -> torch.Tensor:
    """``identity + shuffle(concat(X1 * gate1, X2 * gate2))`` written slot by slot into a new tensor (no
    concatenated intermediate, no shuffle copy); without identity, just the shuffled products."""
    dtype = like.dtype if identity is None else torch.promote_types(like.dtype, identity.dtype)
    out = torch.empty_like(like, dtype=dtype)
    slots = _shuffled_slots(out, groups)
    if identity is None:
        for k in (0, 1):
            torch.mul(xs[k], gates[k], out=slots[k])
    else:
        ids = _shuffled_slots(identity, groups)
        for k in (0, 1):
            torch.addcmul(ids[k], xs[k], gates[k], out=slots[k])
    return out


class _ShuffleAttentionTraining(torch.autograd.Function):
    """SA with autograd on, for even G: ``identity + SA(x)`` (``SA(x)`` when identity is None).

    One node for the block-sized work, written into the shuffled output slot by slot as at inference.
    The spatial branch runs ATen's GroupNorm forward and backward on one dense copy of X2 with the branch's
    affine folded in (``sw * (gn_w * n + gn_b) + sb``); the small maps keep autograd (the channel gate on the
    pooled (B, G/2, 2, C/2G) means, and the folded affine from the four parameters), differentiated inside
    backward. Backward, with g1, g2 the output gradient's slots of the two branches and S = sigmoid(z):

        dL/dz  = g2 * X2 * S * (1 - S);   dL/dX2 = g2 * S + GroupNorm backward(dL/dz)
        dL/dgate1 = sum_hw g1 * X1;       dL/dX1 = g1 * gate1 + dL/dmean(X1) / HW

    written into X's gradient through the same branch views; the identity's gradient is the output's.
    Autograd through the branch-wise equation makes about twice the block-sized passes (a concatenation
    in forward and one in backward, separate products, and sums of the two gradients of X2).
    Under ``torch.compile`` SA uses that equation instead (dynamo cannot trace the inner graphs).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: torch.Tensor, identity: torch.Tensor | None, sa: ShuffleAttention, *params: torch.Tensor
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        g = sa.groups
        n, half = b * g, c // (2 * g)
        x1, x2 = _branch_views(x, g)
        with inner_graph():
            mean1 = x1.mean((-2, -1), keepdim=True).requires_grad_()
            gate1 = sa._channel_gate(mean1)
            affine = sa._spatial_affine()
        dense_x2 = x2.contiguous()  # (B, G/2, 2, C/2G, H, W): GroupNorm's (N, C/2G, H, W) with N = B*G
        weight, bias = affine.detach().to(x.dtype).unbind()
        z, mean, rstd = torch.native_group_norm(
            dense_x2.view(n, half, h, w), weight, bias, n, half, h * w, half, sa.gn.eps
        )
        gate2 = z.sigmoid_().view(x2.shape)
        out = _write_shuffled((x1, x2), (gate1.detach().to(x.dtype), gate2), identity, x, g)
        ctx.save_for_backward(x, dense_x2, mean, rstd, gate2)
        ctx.graphs, ctx.gn_weight = (mean1, gate1, affine), weight
        ctx.groups, ctx.saved_params = g, params  # params: the channel branch's two first
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_identity = grad if ctx.needs_input_grad[1] else None
        if not (ctx.needs_input_grad[0] or any(ctx.needs_input_grad[3:])):
            return (None, grad_identity, None, *(None for _ in ctx.saved_params))
        x, dense_x2, mean, rstd, gate2 = ctx.saved_tensors
        mean1, gate1_graph, affine = ctx.graphs
        params, g = ctx.saved_params, ctx.groups
        b, c, h, w = x.shape
        n, half = b * g, c // (2 * g)
        x1, x2 = _branch_views(x, g)
        g1, g2 = _shuffled_slots(grad.to(x.dtype), g)
        gate1 = gate1_graph.detach().to(x.dtype)
        # spatial branch: dL/dz in GroupNorm's dense layout, then GroupNorm's own backward
        grad_z = torch.mul(g2, x2, out=torch.empty_like(dense_x2))
        torch.ops.aten.sigmoid_backward.grad_input(grad_z, gate2, grad_input=grad_z)
        grad_x2, grad_weight, grad_bias = torch.ops.aten.native_group_norm_backward(
            grad_z.view(n, half, h, w),
            dense_x2.view(n, half, h, w),
            mean,
            rstd,
            ctx.gn_weight,
            n,
            half,
            h * w,
            half,
            [ctx.needs_input_grad[0], True, True],
        )
        grads_s = inner_grad(affine, torch.stack([grad_weight, grad_bias]), (), params[2:])
        # channel branch; grad_z is spent, its buffer takes the product (one fewer block-sized allocation)
        grad_gate1 = torch.mul(g1, x1, out=grad_z).sum((-2, -1), keepdim=True)
        grad_mean1, *grads_c = inner_grad(gate1_graph, grad_gate1, (mean1,), params[:2])
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
            grad_x1, grad_x2_out = _branch_views(grad_x, g)
            # mul + add_: addcmul with two broadcast operands leaves the vectorised loop on CPU
            torch.mul(g1, gate1, out=grad_x1).add_(grad_mean1.to(x.dtype) / (h * w))
            torch.addcmul(grad_x2.view(x2.shape), g2, gate2, out=grad_x2_out)
        return (grad_x, grad_identity, None, *grads_c, *grads_s)


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

    def _channel_gate(self, mean1: torch.Tensor) -> torch.Tensor:
        """sigmoid(cw * GAP(X1) + cb) from the spatial means of X1 (..., C/2G, 1, 1)."""
        half = mean1.shape[-3]
        return torch.sigmoid(self.cweight.view(half, 1, 1) * mean1 + self.cbias.view(half, 1, 1))

    def _spatial_affine(self) -> torch.Tensor:
        """The spatial branch's affine folded into GroupNorm's: (2, C/2G), rows weight and bias."""
        sw, sb = self.sweight.flatten(), self.sbias.flatten()
        return torch.stack([self.gn.weight * sw, self.gn.bias * sw + sb])

    def _gates(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel gate of X1 (one value per sample and channel) and the full-size spatial gate of X2.

        ``x1``, ``x2``: (..., C/2G, H, W) views; the result broadcasts against them.
        """
        half, h, w = x2.shape[-3:]
        gate1 = self._channel_gate(x1.mean((-2, -1), keepdim=True)).to(x1.dtype)
        weight, bias = self._spatial_affine().unbind()
        if torch.is_grad_enabled():
            # autograd (odd G, torch.compile): GroupNorm's fused backward is far cheaper than autograd
            # through the statistics below
            z = F.group_norm(x2.reshape(-1, half, h, w), half, weight, bias, self.gn.eps)
            # in place is safe for autograd: GroupNorm's backward does not use its output
            return gate1, z.sigmoid_().view(x2.shape)
        # inference: GroupNorm(C/2G, C/2G) normalises each channel on its own, so the folded affine of the
        # normalised X2 is a * x2 + s with one (a, s) per sample and channel: statistics straight from the
        # strided view (no reshaped copy; two passes, as torch.var_mean is far slower on CPU)
        stats = x2 if x2.dtype in (torch.float32, torch.float64) else x2.float()
        centred = stats - stats.mean((-2, -1), keepdim=True)
        var = torch.linalg.vector_norm(centred, dim=(-2, -1), keepdim=True).square() / (h * w)
        slope = weight.view(half, 1, 1) * torch.rsqrt(var + self.gn.eps)
        # the centred copy becomes the gate in place (no second half-block tensor); mul_ then add_, not one
        # addcmul: with two broadcast operands addcmul leaves the vectorised loop (3-4x slower on CPU)
        gate2 = centred.mul_(slope).add_(bias.view(half, 1, 1)).sigmoid_()
        return gate1, gate2.to(x2.dtype)

    def _gated(self, x: torch.Tensor, identity: torch.Tensor | None) -> torch.Tensor:
        g, half = self.groups, x.shape[1] // (2 * self.groups)
        if g % 2:
            # the 2-way shuffle splits a group: gate in group order, then shuffle (one extra copy); unbind,
            # not two indexing ops: one backward node stacks both gradients (no zero-filled copies)
            x1, x2 = x.unflatten(1, (g, 2, half)).unbind(2)
            gate1, gate2 = self._gates(x1, x2)
            y = channel_shuffle(torch.stack([x1 * gate1, x2 * gate2], dim=2).flatten(1, 3), 2)
            return y if identity is None else y + identity
        if not torch.is_grad_enabled():
            xs = _branch_views(x, g)
            return _write_shuffled(xs, self._gates(*xs), identity, x, g)
        if not torch.compiler.is_compiling():
            return _ShuffleAttentionTraining.apply(x, identity, self, *self.parameters())
        # under torch.compile: autograd through the branch-wise equation (inductor fuses it)
        xs = _branch_views(x, g)
        gates = self._gates(*xs)
        parts = [(xs[k] * gates[k]).transpose(2, 3) for k in (0, 1)]  # (B, G/2, q, i, H, W)
        y = torch.stack(parts, dim=2).flatten(1, 4)
        return y if identity is None else y + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._gated(x, None)

    def gate_add(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """``identity + forward(x)`` with the residual add fused into the gating pass."""
        return self._gated(x, identity)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
