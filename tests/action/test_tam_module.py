"""TAM: equality with the official grouped-conv formulation (forward and gradients), shapes, errors,
autocast, channels_last, parameter count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from video_attn.models.temporal.tam import (
    AGGREGATIONS,
    TAM,
    ShiftedWeightedSumFunction,
    shifted_weighted_sum,
    temporal_adaptive_aggregate,
)


class OfficialStyleTAM(nn.Module):
    """The official module (liu-zhy/temporal-adaptive-module, ops/temporal_module.py) written out: the local
    branch's first Conv1d has ``kernel_size`` taps and padding ``kernel_size // 2``; Eq. 4 runs on a copy
    permuted to (N, C, T, H, W) as one grouped conv2d (groups = N*C) with temporal padding ``k // 2`` (the
    official ``padding`` argument, 1 by default, set to ``k // 2`` so that K = 5 keeps T frames)."""

    def __init__(self, c: int, t: int, alpha: int = 2, beta: int = 4, k: int = 3) -> None:
        super().__init__()
        self.t, self.k = t, k
        self.G = nn.Sequential(
            nn.Linear(t, t * alpha, bias=False),
            nn.BatchNorm1d(t * alpha),
            nn.ReLU(inplace=True),
            nn.Linear(t * alpha, k, bias=False),
            nn.Softmax(-1),
        )
        self.L = nn.Sequential(
            nn.Conv1d(c, c // beta, k, stride=1, padding=k // 2, bias=False),
            nn.BatchNorm1d(c // beta),
            nn.ReLU(inplace=True),
            nn.Conv1d(c // beta, c, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        n = nt // self.t
        new_x = x.view(n, self.t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()
        s = F.adaptive_avg_pool2d(new_x.view(n * c, self.t, h, w), (1, 1)).view(-1, self.t)
        kernel = self.G(s).view(n * c, 1, -1, 1)
        local = self.L(s.view(n, c, self.t)).view(n, c, self.t, 1, 1)
        new_x = new_x * local
        out = F.conv2d(new_x.view(1, n * c, self.t, h * w), kernel, padding=(self.k // 2, 0), groups=n * c)
        return out.view(n, c, self.t, h, w).permute(0, 2, 1, 3, 4).contiguous().view(nt, c, h, w)


def _pair(c: int, t: int, k: int = 3, **kwargs) -> tuple[TAM, OfficialStyleTAM]:
    torch.manual_seed(0)
    tam = TAM(c, t, kernel_size=k, **kwargs).double()
    ref = OfficialStyleTAM(c, t, k=k).double()
    missing = ref.load_state_dict(tam.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    return tam, ref


@pytest.mark.parametrize(("c", "t", "k", "n"), [(16, 8, 3, 2), (8, 4, 5, 3), (12, 2, 5, 1), (8, 1, 3, 4)])
@pytest.mark.parametrize("train", [True, False])
def test_tam_equals_official_module_forward_and_gradients(c, t, k, n, train):
    tam, ref = _pair(c, t, k)
    tam.train(train)
    ref.train(train)
    if not train:  # non-trivial running statistics
        for m in list(tam.modules()) + list(ref.modules()):
            if isinstance(m, nn.BatchNorm1d):
                torch.manual_seed(1)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(n * t, c, 5, 6, dtype=torch.float64)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    y1, y2 = tam(x1), ref(x2)
    assert y1.shape == x.shape
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(y1)
    p1 = [x1, *tam.parameters()]
    p2 = [x2, *ref.parameters()]
    grads1 = torch.autograd.grad(y1, p1, g)
    grads2 = torch.autograd.grad(y2, p2, g)
    names = ["x"] + [name for name, _ in tam.named_parameters()]
    for name, a, b in zip(names, grads1, grads2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=f"gradient of {name}")
    if train:  # running statistics are updated identically
        for (name, b1), (_, b2) in zip(tam.named_buffers(), ref.named_buffers(), strict=True):
            torch.testing.assert_close(b1, b2, msg=name)


@pytest.mark.parametrize("k", [3, 5])
def test_local_branch_first_conv_has_kernel_size_taps(k):
    tam = TAM(16, 8, kernel_size=k)
    conv = tam.L[0]
    assert conv.kernel_size == (k,) and conv.padding == (k // 2,) and conv.weight.shape == (4, 16, k)
    assert tam.G[3].weight.shape == (k, 16)


@pytest.mark.parametrize("aggregation", ["shift_autograd", "grouped_conv"])
def test_aggregation_options_match_the_default(aggregation):
    tam, _ = _pair(16, 4)
    other = TAM(16, 4, aggregation=aggregation).double()
    other.load_state_dict(tam.state_dict())
    x = torch.randn(8, 16, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(tam(x), other(x))


@pytest.mark.parametrize(("t", "k"), [(6, 3), (4, 5), (2, 5), (1, 3)])
def test_fused_shifted_sum_equals_plain_ops(t, k):
    """The written-out backward of the fused form gives autograd's gradients of the plain-ops form."""
    torch.manual_seed(0)
    x = torch.randn(2, t, 3, 4, 5, dtype=torch.float64)
    coef = torch.randn(2, t, 3, k, dtype=torch.float64)
    x1, c1 = x.clone().requires_grad_(), coef.clone().requires_grad_()
    x2, c2 = x.clone().requires_grad_(), coef.clone().requires_grad_()
    y1, y2 = ShiftedWeightedSumFunction.apply(x1, c1), shifted_weighted_sum(x2, c2)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y1)
    for a, b in zip(torch.autograd.grad(y1, (x1, c1), g), torch.autograd.grad(y2, (x2, c2), g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.equal(x1, x) and torch.equal(c1, coef)  # inputs untouched


def test_aggregation_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    kernel = torch.rand(2, 3, 3, dtype=torch.float64, requires_grad=True)
    imp = torch.rand(2, 3, 4, dtype=torch.float64, requires_grad=True)
    for aggregation in AGGREGATIONS:
        assert torch.autograd.gradcheck(
            lambda a, b, c, mode=aggregation: temporal_adaptive_aggregate(a, b, c, mode), (x, kernel, imp)
        )


@pytest.mark.parametrize(("t", "k"), [(5, 3), (5, 5), (2, 5), (1, 3), (1, 5)])
def test_aggregation_is_the_documented_sum(t, k):
    """Eq. 4: y[n,t,c] = sum_k w[n,c,k] * imp[n,c,t+k-K//2] * x[n,t+k-K//2,c], zero outside [0, T)."""
    torch.manual_seed(0)
    n, c = 2, 3
    x = torch.randn(n, t, c, 2, 2, dtype=torch.float64)
    kernel = torch.rand(n, c, k, dtype=torch.float64)
    imp = torch.rand(n, c, t, dtype=torch.float64)
    expected = torch.zeros_like(x)
    for b in range(n):
        for ti in range(t):
            for ch in range(c):
                for tap in range(k):
                    src = ti + tap - k // 2
                    if 0 <= src < t:
                        expected[b, ti, ch] += kernel[b, ch, tap] * imp[b, ch, src] * x[b, src, ch]
    for aggregation in AGGREGATIONS:
        torch.testing.assert_close(temporal_adaptive_aggregate(x, kernel, imp, aggregation), expected)


def test_parameter_count_and_names():
    tam = TAM(64, 8)
    # G: 8*16 + BN(16)*2 + 16*3 = 208; L: 64*16*3 + BN(16)*2 + 16*64 = 4128
    assert sum(p.numel() for p in tam.parameters()) == 4336
    assert sorted(tam.state_dict()) == sorted(
        [
            "G.0.weight",
            "G.1.weight",
            "G.1.bias",
            "G.1.running_mean",
            "G.1.running_var",
            "G.1.num_batches_tracked",
            "G.3.weight",
            "L.0.weight",
            "L.1.weight",
            "L.1.bias",
            "L.1.running_mean",
            "L.1.running_var",
            "L.1.num_batches_tracked",
            "L.3.weight",
        ]
    )
    assert tam.G[0].weight.shape == (16, 8) and tam.G[3].weight.shape == (3, 16)
    assert tam.L[0].weight.shape == (16, 64, 3) and tam.L[3].weight.shape == (64, 16, 1)
    # framework default init (no special init in the official code)
    assert tam.G[1].weight.eq(1).all() and tam.L[1].bias.eq(0).all()


def test_basic_block_width_and_batch_error():
    tam = TAM(8, 8)  # TANet-R18 at base_width 8
    y = tam(torch.randn(16, 8, 4, 4))
    assert y.shape == (16, 8, 4, 4)
    assert tam.train()(torch.randn(8, 8, 4, 4)).shape == (8, 8, 4, 4)  # one clip: BN1d still has samples
    with pytest.raises(ValueError, match="not divisible by num_segments=8"):
        tam(torch.randn(12, 8, 4, 4))
    with pytest.raises(ValueError, match=r"\(N\*T, C, H, W\)"):
        tam(torch.randn(8, 8, 4))
    with pytest.raises(ValueError, match="odd"):
        TAM(8, 8, kernel_size=4)


def test_channels_last_same_values_and_layout():
    tam, _ = _pair(16, 4)
    tam = tam.float()
    x = torch.randn(8, 16, 5, 5)
    xc = x.to(memory_format=torch.channels_last).requires_grad_()
    xd = x.clone().requires_grad_()
    yc, yd = tam(xc), tam(xd)
    assert yc.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(yc, yd)
    g = torch.randn_like(yd)
    yc.backward(g)
    yd.backward(g)
    torch.testing.assert_close(xc.grad, xd.grad)


def test_autocast_bfloat16_close_to_float32():
    tam, _ = _pair(16, 4)
    tam = tam.float().eval()
    x = torch.randn(8, 16, 5, 5)
    ref = tam(x)
    xb = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = tam(xb.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    torch.testing.assert_close(y.float(), ref, rtol=0.05, atol=0.05)
    y.float().square().sum().backward()
    assert xb.grad is not None and torch.isfinite(xb.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tam.parameters())
