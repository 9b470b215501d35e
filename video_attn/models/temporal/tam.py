"""TAM, the Temporal Adaptive Module of TANet.

Liu et al., "TAM: Temporal Adaptive Module for Video Recognition", ICCV 2021 (arXiv 2005.06803), Sec. 3;
official code liu-zhy/temporal-adaptive-module, ``ops/temporal_module.py``.
For an input of ``N`` clips of ``T`` frames, with ``s = mean_{h,w} x`` of shape (N, C, T):

- local branch, a temporal importance map (Eq. 2):
  ``imp = sigmoid(Conv1x1(relu(BN(ConvK(s)))))``, ``C -> C/beta -> C``, where ``ConvK`` is a temporal
  ``Conv1d`` with ``kernel_size`` taps and padding ``kernel_size // 2`` (the official module; the paper's
  figure draws 3 taps, which is the default);
- global branch, one K-tap kernel per (n, c) (Eq. 3):
  ``w[n, c] = softmax(W2 relu(BN(W1 s[n, c])))`` with ``W1: T -> alpha*T`` and ``W2: alpha*T -> K``;
- output (Eq. 4): ``y[n, t, c] = sum_k w[n, c, k] * imp[n, c, t+k-K//2] * x[n, t+k-K//2, c]``, a depthwise
  temporal convolution of ``imp * x`` with zero padding ``K // 2`` and stride 1.

Parameter names (``G.0``, ``G.1``, ``G.3``, ``L.0``, ``L.1``, ``L.3``) follow the official module so that
official checkpoints map 1:1. The official code runs Eq. 4 as one grouped ``conv2d`` (groups = N*C) over a
permuted copy of the input. Here Eq. 4 is a sum of K shifted, weighted copies of ``x`` in its own
(N, T, C, H, W) layout (no permuted copy; channels_last is kept), in three interchangeable forms
(``aggregation``, same values and gradients):

- ``"shift"`` (default): :class:`ShiftedWeightedSumFunction`, the sum accumulated in place with a written-out
  backward; on CPU it is 2-4x faster than the plain-ops form and faster than the grouped conv;
- ``"shift_autograd"``: :func:`shifted_weighted_sum`, the sum in plain tensor ops with autograd's backward
  (the reference the fused form is tested against);
- ``"grouped_conv"``: the official grouped convolution.

``benchmarks/temporal.py`` times all three (``docs/benchmarks.md``).

The number of segments ``T`` is fixed at construction: the global branch's first Linear has ``T`` inputs, so
a model trained with 8 segments cannot run 16. The branches' BatchNorm1d layers see N*C (global) and N*T
(local) samples per channel, so training works even with one clip per batch (when C > 1 and T > 1).
Works under autocast (bf16 / fp16: the aggregation runs in the input's dtype) and with channels_last input.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from video_attn.models.attention.probe import AttentionProbe

__all__ = [
    "TAM",
    "ShiftedWeightedSumFunction",
    "set_tam_aggregation",
    "shift_frames",
    "shifted_weighted_sum",
    "tap_coefficients",
    "temporal_adaptive_aggregate",
]

Aggregation = Literal["shift", "shift_autograd", "grouped_conv"]
AGGREGATIONS: tuple[str, ...] = ("shift", "shift_autograd", "grouped_conv")


def shift_frames(x: Tensor, d: int) -> Tensor:
    """``out[:, t] = x[:, t + d]`` for ``x`` of shape (N, T, ...), zero frames past the ends of T."""
    if d == 0:
        return x
    if abs(d) >= x.shape[1]:
        return torch.zeros_like(x)
    return F.pad(x, (0, 0) * (x.dim() - 2) + (-d, d))  # crop d frames at one end, d zero frames at the other


def shifted_weighted_sum(x: Tensor, coef: Tensor) -> Tensor:
    """``out[:, t] = sum_k coef[:, t, :, k] * x[:, t + k - K//2]``, frames outside [0, T) being zeros.

    Args:
        x: (N, T, C, H, W) in any memory layout (the output has the same one).
        coef: (N, T, C, K) per-frame, per-channel tap coefficients, broadcast over H, W.
    Returns:
        (N, T, C, H, W).
    """
    num_taps = coef.shape[-1]
    pad = num_taps // 2
    coef = coef[..., None, None]  # (N, T, C, K, 1, 1)
    out = coef[:, :, :, pad] * x  # the unshifted tap first, so that the sum keeps x's memory layout
    for k in range(num_taps):
        if k != pad:
            out = out + coef[:, :, :, k] * shift_frames(x, k - pad)
    return out


class ShiftedWeightedSumFunction(torch.autograd.Function):
    """:func:`shifted_weighted_sum` with a written-out backward; same values and gradients.

    ``apply(x, coef)`` with ``x`` (N, T, C, H, W) and ``coef`` (N, T, C, K). The plain-ops form allocates a
    shifted copy and a product per tap, and autograd adds as many in the backward; here each pass allocates
    only its output: products accumulate in place (``addcmul_``) into frame slices, and the coefficient
    gradient ``sum_hw grad[:, t] * x[:, t + k - K//2]`` is one ``vecdot`` per tap. For a shift ``d``:
    ``out[:, t] += coef[:, t, :, k] * x[:, t + d]`` and ``grad_x[:, t + d] += coef[:, t, :, k] * grad[:, t]``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, coef: Tensor) -> Tensor:
        num_taps, t = coef.shape[-1], x.shape[1]
        pad = num_taps // 2
        c = coef.to(x.dtype)[..., None, None]
        out = x * c[:, :, :, pad]
        for k in range(num_taps):
            d = k - pad
            if d != 0 and abs(d) < t:
                out_t, x_t = _overlap(t, d)
                out[:, out_t].addcmul_(x[:, x_t], c[:, out_t, :, k])
        ctx.save_for_backward(x, coef)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, coef = ctx.saved_tensors
        num_taps, t = coef.shape[-1], x.shape[1]
        pad = num_taps // 2
        grad = grad.to(x.dtype)
        grad_x = grad_coef = None
        if ctx.needs_input_grad[0]:
            c = coef.to(x.dtype)[..., None, None]
            grad_x = grad * c[:, :, :, pad]
            for k in range(num_taps):
                d = k - pad
                if d != 0 and abs(d) < t:
                    out_t, x_t = _overlap(t, d)
                    grad_x[:, x_t].addcmul_(grad[:, out_t], c[:, out_t, :, k])
        if ctx.needs_input_grad[1]:
            acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            grad_coef = torch.zeros(coef.shape, dtype=acc_dtype, device=coef.device)
            g2, x2 = grad.flatten(-2), x.flatten(-2)
            for k in range(num_taps):
                d = k - pad
                if abs(d) < t:
                    out_t, x_t = _overlap(t, d)
                    grad_coef[:, out_t, :, k] = torch.linalg.vecdot(g2[:, out_t], x2[:, x_t]).to(acc_dtype)
            grad_coef = grad_coef.to(coef.dtype)
        return grad_x, grad_coef


def _overlap(t: int, d: int) -> tuple[slice, slice]:
    """The output frames ``t`` and input frames ``t + d`` that both lie in [0, T)."""
    return (slice(0, t - d), slice(d, t)) if d >= 0 else (slice(-d, t), slice(0, t + d))


def tap_coefficients(kernel: Tensor, importance: Tensor) -> Tensor:
    """``coef[n, t, c, k] = kernel[n, c, k] * importance[n, c, t + k - K//2]``, zero outside [0, T).

    Args:
        kernel: (N, C, K) temporal kernels.
        importance: (N, C, T) importance of each frame.
    Returns:
        (N, T, C, K), the coefficients of :func:`shifted_weighted_sum` that give Eq. 4.
    """
    num_taps, t = kernel.shape[-1], importance.shape[-1]
    pad = num_taps // 2
    imp_windows = F.pad(importance, (pad, pad)).unfold(-1, t, 1)  # (N, C, K, T): imp[n, c, t + k - pad]
    return (kernel.unsqueeze(-1) * imp_windows).permute(0, 3, 1, 2)


def temporal_adaptive_aggregate(
    x: Tensor, kernel: Tensor, importance: Tensor, aggregation: Aggregation = "shift"
) -> Tensor:
    """Eq. 4: depthwise temporal convolution of ``importance * x`` with one kernel per (clip, channel).

    Args:
        x: (N, T, C, H, W) features.
        kernel: (N, C, K) temporal kernels, K odd; tap k multiplies frame ``t + k - K//2`` (cross-correlation,
            as ``conv2d``).
        importance: (N, C, T) multiplicative importance of each frame.
        aggregation: ``"shift"`` (fused sum of shifted copies, default), ``"shift_autograd"`` (the same sum in
            plain ops) or ``"grouped_conv"`` (official).
    Returns:
        (N, T, C, H, W), zero padding ``K // 2`` along T.
    """
    n, t, c, h, w = x.shape
    num_taps = kernel.shape[-1]
    pad = num_taps // 2
    kernel, importance = kernel.to(x.dtype), importance.to(x.dtype)
    if aggregation == "grouped_conv":
        weighted = x.permute(0, 2, 1, 3, 4).contiguous() * importance.view(n, c, t, 1, 1)
        out = F.conv2d(
            weighted.view(1, n * c, t, h * w),
            kernel.reshape(n * c, 1, num_taps, 1),
            padding=(pad, 0),
            groups=n * c,
        )
        return out.view(n, c, t, h, w).permute(0, 2, 1, 3, 4)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation={aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    # Folding the importance into the tiny tap coefficients spares a full-size product and its backward.
    coef = tap_coefficients(kernel, importance)
    if aggregation == "shift":
        return ShiftedWeightedSumFunction.apply(x, coef)
    return shifted_weighted_sum(x, coef)


class TAM(nn.Module):
    """Temporal Adaptive Module (TANet), see the module docstring for the equations.

    Args:
        in_channels: channels C of the input (the bottleneck width after conv1 in TANet).
        num_segments: frames T per clip; fixed (the global branch's first Linear has T inputs).
        alpha: expansion of the global branch (hidden size alpha*T). Default 2 as official.
        beta: reduction of the local branch (hidden channels C // beta). Default 4 as official.
        kernel_size: taps K of the adaptive kernel and of the local branch's first temporal conv (odd).
            Default 3 as official.
        aggregation: ``"shift"`` (default), ``"shift_autograd"`` or ``"grouped_conv"`` (official
            formulation); same values and gradients.

    Shape:
        input (N*T, C, H, W) -> output (N*T, C, H, W); any memory format (the shifted sums keep
        channels_last).

    Probes (:mod:`video_attn.models.attention.probe`): ``kernel_probe`` carries the global branch's kernels
    ``w`` (N, C, K), kind ``temporal_kernel``; ``importance_probe`` the local branch's frame importance
    ``imp`` (N, C, T), kind ``temporal_importance``; both fed to :func:`temporal_adaptive_aggregate`.
    """

    def __init__(
        self,
        in_channels: int,
        num_segments: int,
        alpha: int = 2,
        beta: int = 4,
        kernel_size: int = 3,
        aggregation: Aggregation = "shift",
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"TAM kernel_size must be a positive odd number, got {kernel_size}")
        if num_segments < 1 or alpha < 1 or beta < 1:
            raise ValueError(f"TAM needs num_segments, alpha, beta >= 1, got {num_segments}, {alpha}, {beta}")
        if in_channels // beta < 1:
            raise ValueError(f"TAM in_channels={in_channels} is smaller than beta={beta}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"TAM aggregation={aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        self.in_channels = in_channels
        self.num_segments = num_segments
        self.kernel_size = kernel_size
        self.aggregation = aggregation
        hidden = num_segments * alpha
        self.G = nn.Sequential(
            nn.Linear(num_segments, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, kernel_size, bias=False),
            nn.Softmax(dim=-1),
        )
        reduced = in_channels // beta
        self.L = nn.Sequential(
            nn.Conv1d(in_channels, reduced, kernel_size, stride=1, padding=kernel_size // 2, bias=False),
            nn.BatchNorm1d(reduced),
            nn.ReLU(inplace=True),
            nn.Conv1d(reduced, in_channels, kernel_size=1, bias=False),
            nn.Sigmoid(),
        )
        self.kernel_probe = AttentionProbe("temporal_kernel")
        self.importance_probe = AttentionProbe("temporal_importance")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"TAM expects (N*T, C, H, W), got shape {tuple(x.shape)}")
        nt, c, h, w = x.shape
        t = self.num_segments
        if nt % t != 0:
            raise ValueError(
                f"TAM: batch of {nt} frames is not divisible by num_segments={t} "
                "(the module is built for a fixed number of segments per clip)"
            )
        n = nt // t
        x5 = x.view(n, t, c, h, w)
        squeezed = x5.mean(dim=(3, 4)).transpose(1, 2)  # s: (N, C, T)
        kernel = self.kernel_probe(self.G(squeezed.reshape(n * c, t)).view(n, c, self.kernel_size))  # Eq. 3
        importance = self.importance_probe(self.L(squeezed))  # Eq. 2, (N, C, T)
        out = temporal_adaptive_aggregate(x5, kernel, importance, self.aggregation)  # Eq. 4
        return out.reshape(nt, c, h, w)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_segments={self.num_segments}, "
            f"kernel_size={self.kernel_size}, aggregation={self.aggregation!r}"
        )


def set_tam_aggregation(model: nn.Module, aggregation: Aggregation) -> int:
    """Switch every :class:`TAM` inside ``model`` to ``aggregation`` (in place); returns how many there are.

    The three forms give equal values, so this changes no output: it picks the form a tool needs. The
    default ``"shift"`` is a custom autograd Function, which TorchScript cannot serialise;
    ``"shift_autograd"`` (plain tensor ops) exports. Both shifted sums are elementwise work that
    ``torch.utils.flop_counter`` does not count; ``"grouped_conv"`` (the official convolution) is counted as
    a convolution's multiply-adds. Call it on a copy of a model that keeps training or running with the
    default.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"TAM aggregation={aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    count = 0
    for module in model.modules():
        if isinstance(module, TAM):
            module.aggregation = aggregation
            count += 1
    return count
