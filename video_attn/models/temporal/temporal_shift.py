"""TSM temporal shift.

Lin et al., "TSM: Temporal Shift Module for Efficient Video Understanding", ICCV 2019 (arXiv 1811.08383),
Sec. 3: of the C channels of each frame, the first ``C // shift_div`` take their values from the next frame
(shift left in time), the next ``C // shift_div`` from the previous frame (shift right), the rest stay.
Frames shifted in from outside the clip are zeros (the official code's zero padding, not a cyclic shift).
In TSM-ResNet the shift is "residual": it is applied to the input of the residual branch only (before conv1),
which is the ``block.shift`` slot of this project's ResNet blocks. No parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TemporalShift", "temporal_shift"]


def temporal_shift(x: Tensor, num_segments: int, shift_div: int = 8) -> Tensor:
    """Shift 1/shift_div of the channels one frame back and 1/shift_div one frame forward in time.

    Args:
        x: (N*T, C, H, W) frames of N clips of T = ``num_segments`` frames.
    Returns:
        (N*T, C, H, W) with ``out[n, t, :fold] = x[n, t+1, :fold]``,
        ``out[n, t, fold:2*fold] = x[n, t-1, fold:2*fold]`` (zeros past the ends), other channels unchanged,
        where ``fold = C // shift_div``.
    """
    if x.dim() != 4:
        raise ValueError(f"temporal_shift expects (N*T, C, H, W), got shape {tuple(x.shape)}")
    nt, c, h, w = x.shape
    if nt % num_segments != 0:
        raise ValueError(
            f"temporal_shift: batch of {nt} frames is not divisible by num_segments={num_segments}"
        )
    x5 = x.view(nt // num_segments, num_segments, c, h, w)
    fold = c // shift_div
    out = torch.zeros_like(x5)
    out[:, :-1, :fold] = x5[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x5[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x5[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
    """Module form of :func:`temporal_shift` for the ``block.shift`` slot. Default ``shift_div=8`` (TSM)."""

    def __init__(self, num_segments: int, shift_div: int = 8) -> None:
        super().__init__()
        if num_segments < 1 or shift_div < 2:
            raise ValueError(
                f"TemporalShift needs num_segments >= 1 and shift_div >= 2, got {num_segments}, {shift_div}"
            )
        self.num_segments = num_segments
        self.shift_div = shift_div

    def forward(self, x: Tensor) -> Tensor:
        return temporal_shift(x, self.num_segments, self.shift_div)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, shift_div={self.shift_div}"
