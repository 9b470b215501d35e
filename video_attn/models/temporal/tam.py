"""TAM, the Temporal Adaptive Module of TANet.

Liu et al., "TAM: Temporal Adaptive Module for Video Recognition", ICCV 2021 (arXiv 2005.06803), Sec. 3.
For an input of ``N`` clips of ``T`` frames, with ``s = mean_{h,w} x`` of shape (N, C, T):

- global branch, one K-tap kernel per (n, c) (Eq. 3):
  ``w[n, c] = softmax(W2 relu(BN(W1 s[n, c])))`` with ``W1: T -> alpha*T`` and ``W2: alpha*T -> K``;
- local branch, a temporal importance map (Eq. 2):
  ``imp = sigmoid(Conv1x1(relu(BN(Conv3(s)))))``, ``C -> C/beta -> C``;
- output (Eq. 4): ``y[n, t, c] = sum_k w[n, c, k] * imp[n, c, t+k-K//2] * x[n, t+k-K//2, c]``, a depthwise
  temporal convolution of ``x * imp`` with zero padding ``K // 2`` and stride 1.

Parameter names (``G.0``, ``G.1``, ``G.3``, ``L.0``, ``L.1``, ``L.3``) follow the official module so that
official checkpoints map 1:1. The official code runs the last step as one grouped ``conv2d`` (groups = N*C)
over a permuted copy of the input. Here the default ``aggregation="shift"`` computes the same sum as K
shifted, weighted copies of ``x`` in the original (N, T, C, H, W) layout, with a custom autograd function so
the backward pass also avoids permuted copies and zero-padded temporaries (see ``benchmarks/temporal.py``).
``aggregation="grouped_conv"`` keeps the official formulation.

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

__all__ = ["TAM", "temporal_adaptive_aggregate"]


class _ShiftedWeightedSum(torch.autograd.Function):
    """``out[:, t] = sum_k a[:, t, :, k] * x[:, t + k - K//2]`` (zero outside [0, T)), broadcast over H, W.

    ``x``: (N, T, C, H, W) in any memory layout; ``a``: (N, T, C, K). The products are accumulated in place
    (``addcmul_``) so neither pass allocates more than its output.
    """

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor) -> Tensor:
        num_taps = a.shape[-1]
        pad = num_taps // 2
        t = x.shape[1]
        coef = a.to(x.dtype)[..., None, None]
        out = x * coef[:, :, :, pad]
        for k in range(num_taps):
            d = k - pad
            if d == 0 or abs(d) >= t:
                continue
            if d < 0:
                out[:, -d:].addcmul_(x[:, : t + d], coef[:, -d:, :, k])
            else:
                out[:, : t - d].addcmul_(x[:, d:], coef[:, : t - d, :, k])
        ctx.save_for_backward(x, a)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, a = ctx.saved_tensors
        num_taps = a.shape[-1]
        pad = num_taps // 2
        t = x.shape[1]
        grad = grad.to(x.dtype)
        grad_x = grad_a = None
        if ctx.needs_input_grad[0]:
            coef = a.to(x.dtype)[..., None, None]
            grad_x = grad * coef[:, :, :, pad]
            for k in range(num_taps):
                d = k - pad
                if d == 0 or abs(d) >= t:
                    continue
                if d < 0:
                    grad_x[:, : t + d].addcmul_(grad[:, -d:], coef[:, -d:, :, k])
                else:
                    grad_x[:, d:].addcmul_(grad[:, : t - d], coef[:, : t - d, :, k])
        if ctx.needs_input_grad[1]:
            # Reduce over H*W per (n, t, c): vecdot avoids materialising the full-size product.
            acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
            grad_a = torch.zeros(a.shape, dtype=acc_dtype, device=a.device)
            g2 = grad.flatten(-2)
            x2 = x.flatten(-2)
            for k in range(num_taps):
                d = k - pad
                if abs(d) >= t:
                    continue
                if d <= 0:
                    grad_a[:, -d:, :, k] = torch.linalg.vecdot(g2[:, -d:], x2[:, : t + d]).to(acc_dtype)
                else:
                    grad_a[:, : t - d, :, k] = torch.linalg.vecdot(g2[:, : t - d], x2[:, d:]).to(acc_dtype)
            grad_a = grad_a.to(a.dtype)
        return grad_x, grad_a


def temporal_adaptive_aggregate(
    x: Tensor, kernel: Tensor, importance: Tensor, aggregation: Literal["shift", "grouped_conv"] = "shift"
) -> Tensor:
    """Depthwise temporal convolution of ``x * importance`` with one kernel per (clip, channel).

    Args:
        x: (N, T, C, H, W) features.
        kernel: (N, C, K) temporal kernels, K odd; tap k multiplies frame ``t + k - K//2`` (cross-correlation,
            as ``conv2d``).
        importance: (N, C, T) multiplicative importance of each frame.
        aggregation: ``"shift"`` (sum of shifted copies, default) or ``"grouped_conv"`` (official).
    Returns:
        (N, T, C, H, W), zero padding ``K // 2`` along T.
    """
    n, t, c, h, w = x.shape
    num_taps = kernel.shape[-1]
    pad = num_taps // 2
    if aggregation == "grouped_conv":
        xc = x.permute(0, 2, 1, 3, 4).contiguous() * importance.to(x.dtype).view(n, c, t, 1, 1)
        out = F.conv2d(
            xc.view(1, n * c, t, h * w),
            kernel.to(x.dtype).reshape(n * c, 1, num_taps, 1),
            padding=(pad, 0),
            groups=n * c,
        )
        return out.view(n, c, t, h, w).permute(0, 2, 1, 3, 4)
    if aggregation != "shift":
        raise ValueError(f"aggregation={aggregation!r}; valid: 'shift', 'grouped_conv'")
    # a[n, t, c, k] = kernel[n, c, k] * importance[n, c, t + k - pad]: folding the importance into the
    # per-tap coefficients saves a full-size multiply and temporary.
    windows = F.pad(importance, (pad, pad)).unfold(-1, t, 1)  # (N, C, K, T)
    coef = (windows * kernel.unsqueeze(-1).to(windows.dtype)).permute(0, 3, 1, 2)  # (N, T, C, K)
    return _ShiftedWeightedSum.apply(x, coef)


class TAM(nn.Module):
    """Temporal Adaptive Module (TANet), see the module docstring for the equations.

    Args:
        in_channels: channels C of the input (the bottleneck width after conv1 in TANet).
        num_segments: frames T per clip; fixed (the global branch's first Linear has T inputs).
        alpha: expansion of the global branch (hidden size alpha*T). Default 2 as official.
        beta: reduction of the local branch (hidden channels C // beta). Default 4 as official.
        kernel_size: taps K of the adaptive kernel (odd). Default 3 as official.
        aggregation: ``"shift"`` (default, faster) or ``"grouped_conv"`` (official formulation); same math.

    Shape:
        input (N*T, C, H, W) -> output (N*T, C, H, W); any memory format (channels_last is kept).
    """

    def __init__(
        self,
        in_channels: int,
        num_segments: int,
        alpha: int = 2,
        beta: int = 4,
        kernel_size: int = 3,
        aggregation: Literal["shift", "grouped_conv"] = "shift",
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"TAM kernel_size must be a positive odd number, got {kernel_size}")
        if num_segments < 1 or alpha < 1 or beta < 1:
            raise ValueError(f"TAM needs num_segments, alpha, beta >= 1, got {num_segments}, {alpha}, {beta}")
        if in_channels // beta < 1:
            raise ValueError(f"TAM in_channels={in_channels} is smaller than beta={beta}")
        if aggregation not in ("shift", "grouped_conv"):
            raise ValueError(f"TAM aggregation={aggregation!r}; valid: 'shift', 'grouped_conv'")
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
            nn.Conv1d(in_channels, reduced, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm1d(reduced),
            nn.ReLU(inplace=True),
            nn.Conv1d(reduced, in_channels, kernel_size=1, bias=False),
            nn.Sigmoid(),
        )

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
        squeezed = x5.mean(dim=(3, 4)).transpose(1, 2)  # (N, C, T)
        kernel = self.G(squeezed.reshape(n * c, t)).view(n, c, self.kernel_size)
        importance = self.L(squeezed)  # (N, C, T)
        out = temporal_adaptive_aggregate(x5, kernel, importance, self.aggregation)
        return out.reshape(nt, c, h, w) if self.aggregation == "grouped_conv" else out.view(nt, c, h, w)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_segments={self.num_segments}, "
            f"kernel_size={self.kernel_size}, aggregation={self.aggregation!r}"
        )
