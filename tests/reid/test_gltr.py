"""GLTR (official-code facts) and the Gao & Nevatia temporal aggregation baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from video_attn.models.temporal.gltr import GLTR, TemporalNonLocal
from video_attn.models.temporal.temporal_pooling import RecurrentPool, TemporalAttentionPool, TemporalAvgPool


def gltr_param_count(c: int, e: int, n: int, blocks: int = 1) -> int:
    d, i = (n + 1) * e, (n + 1) * e // 2
    embed = c * e + e
    dtp = n * e * e * 3
    tsa = 3 * (d * i + i) + (i * d + d) + 2 * d
    return embed + dtp + blocks * tsa


def test_parameter_count_matches_formula() -> None:
    assert sum(p.numel() for p in GLTR().parameters()) == gltr_param_count(2048, 128, 3) == 936320
    small = GLTR(64, 8, dilations=(1, 2), num_tsa_blocks=2)
    assert sum(p.numel() for p in small.parameters()) == gltr_param_count(64, 8, 2, blocks=2)


def test_official_init() -> None:
    torch.manual_seed(0)
    m = GLTR()
    assert torch.all(m.embed.bias == 0)
    # kaiming normal, fan_out = 128: std sqrt(2 / 128)
    assert abs(m.embed.weight.std().item() - (2 / 128) ** 0.5) < 0.005
    for conv, d in zip(m.dtp, (1, 2, 3)):
        assert (
            conv.bias is None and conv.dilation == (d,) and conv.padding == (d,) and conv.kernel_size == (3,)
        )
        assert abs(conv.weight.std().item() - 0.001) < 0.0001
    block = m.tsa[0]
    for name in ("g", "theta", "phi"):
        layer = getattr(block, name)
        assert layer.bias is not None and layer.weight.shape == (256, 512, 1)
    assert block.W[0].weight.shape == (512, 256, 1) and block.W[0].bias is not None
    assert torch.all(block.W[1].weight == 0) and torch.all(block.W[1].bias == 0)
    assert len(m.tsa) == 1


@pytest.mark.parametrize("t", [1, 2, 16])
def test_shapes(t: int) -> None:
    m = GLTR(32, 8)
    for mode in (m.train, m.eval):
        mode()
        assert m(torch.randn(3, t, 32)).shape == (3, 32)
    assert GLTR(32, 8, dilations=(1, 2, 3, 4))(torch.randn(2, t, 32)).shape == (2, 40)


def test_bad_input_shape_is_clear() -> None:
    with pytest.raises(ValueError, match=r"\(B, T, 32\)"):
        GLTR(32, 8)(torch.randn(2, 32))
    with pytest.raises(ValueError, match="dilation"):
        GLTR(32, 8, dilations=())


def test_tsa_is_identity_at_init() -> None:
    block = TemporalNonLocal(16)
    x = torch.randn(2, 16, 5)
    block.train()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    block.eval()
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_tsa_matches_plain_non_local_reference() -> None:
    torch.manual_seed(1)
    block = TemporalNonLocal(8).eval()
    with torch.no_grad():
        for p in block.W[1].parameters():
            p.normal_()
        block.W[1].running_mean.normal_()
        block.W[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 6)
    expected = []
    for b in range(2):
        xb = x[b]  # (C, T)
        theta = block.theta.weight[:, :, 0] @ xb + block.theta.bias[:, None]  # (C', T)
        phi = block.phi.weight[:, :, 0] @ xb + block.phi.bias[:, None]
        g = block.g.weight[:, :, 0] @ xb + block.g.bias[:, None]
        f = torch.softmax(theta.t() @ phi, dim=-1)  # (T, T), no scaling
        y = g @ f.t()  # y_i = sum_j f_ij g_j -> (C', T)
        wy = block.W[0].weight[:, :, 0] @ y + block.W[0].bias[:, None]
        bn = block.W[1]
        wy = (wy - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
        wy = wy * bn.weight[:, None] + bn.bias[:, None]
        expected.append(wy + xb)
    torch.testing.assert_close(block(x), torch.stack(expected), rtol=1e-5, atol=1e-5)


def test_dtp_conv1d_equals_official_conv2d_form() -> None:
    """The official code's Conv2d(1, E, (3, E)) over the (T x E) map equals Conv1d(E, E, 3, dilation=d)."""
    torch.manual_seed(2)
    e, t = 8, 7
    m = GLTR(16, e)
    f = torch.randn(2, t, e)
    for d, conv1d in zip((1, 2, 3), m.dtp):
        official = nn.Conv2d(1, e, (3, e), padding=(d, 0), dilation=(d, 1), bias=False)
        with torch.no_grad():
            official.weight.normal_()
            conv1d.weight.copy_(official.weight[:, 0].permute(0, 2, 1))  # [o, 0, k, c] -> [o, c, k]
        ref = official(f.unsqueeze(1)).squeeze(3)  # (B, E, T)
        torch.testing.assert_close(conv1d(f.transpose(1, 2)), ref, rtol=1e-5, atol=1e-5)


def test_gltr_forward_equals_step_by_step_reference() -> None:
    torch.manual_seed(3)
    m = GLTR(16, 4).eval()
    x = torch.randn(2, 5, 16)
    f = (x @ m.embed.weight.t() + m.embed.bias).transpose(1, 2)
    parts = [f] + [F.conv1d(f, c.weight, dilation=c.dilation, padding=c.padding) for c in m.dtp]
    z = m.tsa(torch.cat(parts, 1))
    torch.testing.assert_close(m(x), z.mean(2))
    # at init the TSA is the identity, so the feature is the mean of [raw, d1, d2, d3]
    torch.testing.assert_close(m(x), torch.cat(parts, 1).mean(2))


# ------------------------------------------------------------------------------- baselines
def test_temporal_avg_pool() -> None:
    x = torch.randn(2, 5, 7)
    torch.testing.assert_close(TemporalAvgPool(7)(x), x.mean(1))


@pytest.mark.parametrize("normalize", ["softmax", "sigmoid"])
def test_temporal_attention_matches_reference(normalize: str) -> None:
    torch.manual_seed(4)
    c, mid, b, t = 6, 4, 2, 3
    m = TemporalAttentionPool(c, spatial_kernel=(3, 2), mid_channels=mid, normalize=normalize)
    maps = torch.randn(b * t, c, 3, 2)
    per_frame = m.frame_features(maps)
    assert per_frame.shape == (b * t, c + mid)
    out = m(per_frame.view(b, t, -1))
    # reference: official ResNet50TA (kernel == map size so the spatial conv gives one vector per frame)
    a = F.relu(F.conv2d(maps, m.attention_conv.weight, m.attention_conv.bias)).view(b, t, mid)
    s = F.relu(F.conv1d(a.transpose(1, 2), m.attention_tconv.weight, m.attention_tconv.bias, padding=1)).view(
        b, t
    )
    w = (
        torch.softmax(s, 1)
        if normalize == "softmax"
        else torch.sigmoid(s) / torch.sigmoid(s).sum(1, keepdim=True)
    )
    pooled = maps.mean((2, 3)).view(b, t, c)
    torch.testing.assert_close(out, (pooled * w.unsqueeze(-1)).sum(1), rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in m.parameters()) == c * mid * 6 + mid + mid * 3 + 1
    with pytest.raises(ValueError, match="model.temporal_kwargs.spatial_kernel"):
        m.frame_features(torch.randn(2, c, 2, 2))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_pool(cell: str) -> None:
    torch.manual_seed(5)
    m = RecurrentPool(6, 5, cell=cell)
    gates = 4 if cell == "lstm" else 3
    assert sum(p.numel() for p in m.parameters()) == gates * (6 * 5 + 5 * 5 + 2 * 5)
    x = torch.randn(2, 4, 6)
    # reference: a step-by-step cell loop with the same weights, hidden outputs averaged over T
    cell = (nn.LSTMCell if cell == "lstm" else nn.GRUCell)(6, 5)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(m.rnn, f"{name}_l0"))
    h = torch.zeros(2, 5)
    state = (h, torch.zeros(2, 5)) if isinstance(cell, nn.LSTMCell) else h
    outs = []
    for t in range(4):
        state = cell(x[:, t], state)
        outs.append(state[0] if isinstance(state, tuple) else state)
    torch.testing.assert_close(m(x), torch.stack(outs, 1).mean(1), rtol=1e-5, atol=1e-6)
    assert m(x[:, :1]).shape == (2, 5)
    with pytest.raises(ValueError, match="cell"):
        RecurrentPool(6, 5, cell="rnn")
