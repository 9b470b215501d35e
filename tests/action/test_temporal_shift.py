"""TSM temporal shift against an explicit per-element reference."""

from __future__ import annotations

import pytest
import torch

from video_attn.models.temporal.temporal_shift import TemporalShift, temporal_shift


def _reference(x: torch.Tensor, t: int, div: int) -> torch.Tensor:
    nt, c, h, w = x.shape
    n = nt // t
    fold = c // div
    out = torch.empty_like(x)
    for b in range(n):
        for ti in range(t):
            for ch in range(c):
                if ch < fold:  # from the next frame
                    src = ti + 1
                elif ch < 2 * fold:  # from the previous frame
                    src = ti - 1
                else:
                    src = ti
                out[b * t + ti, ch] = x[b * t + src, ch] if 0 <= src < t else 0.0
    return out


@pytest.mark.parametrize(("c", "div"), [(16, 8), (8, 4), (10, 8)])
def test_shift_matches_reference(c, div):
    x = torch.randn(2 * 4, c, 2, 3)
    torch.testing.assert_close(temporal_shift(x, 4, div), _reference(x, 4, div))


def test_shift_defaults_channels_last_and_gradient():
    m = TemporalShift(4)
    assert m.shift_div == 8
    x = torch.randn(8, 16, 3, 3).to(memory_format=torch.channels_last).requires_grad_()
    y = m(x)
    torch.testing.assert_close(y, _reference(x.detach().contiguous(), 4, 8))
    y.sum().backward()
    # each input element reaches the output at most once: grad 1 where kept, 0 where shifted out
    assert x.grad.sum().item() == 8 * 16 * 9 - 2 * 2 * 9 * 2
    assert sum(p.numel() for p in m.parameters()) == 0


def test_shift_batch_error():
    with pytest.raises(ValueError, match="not divisible by num_segments=4"):
        temporal_shift(torch.randn(6, 8, 2, 2), 4)
