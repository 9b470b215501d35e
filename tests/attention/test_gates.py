"""Attention gates: outputs and gradients against the papers' equations written out here and against timm's
modules, official init and parameter counts, dtypes and layouts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from video_attn.models.attention import (
    CBAM,
    ECA,
    GATES,
    ChannelAttention,
    GuardedBatchNorm2d,
    ShuffleAttention,
    SpatialAttention,
    SqueezeExcite,
    adaptive_kernel_size,
    auto_groups,
    channel_shuffle,
    create_attn,
    create_conv,
    create_residual,
    create_stage_module,
    resolve_stage_kwargs,
    resolve_stage_names,
)

# every gate with its official defaults, with the options that fit tiny widths
GATE_CASES = {
    "se": {},
    "eca": {},
    "cbam": {},
    "channel_attn": {},
    "spatial_attn": {},
    "sa": {"groups": 4},
}


def _randomize(module: nn.Module) -> None:
    """Random parameters and BN statistics, so checks do not pass on a degenerate init."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def _assert_same_function(ours: nn.Module, ref, x: torch.Tensor, ref_params=None, x_ref=None, **tol) -> None:
    """``ours(x)`` equals ``ref(x_ref)`` (default ``x_ref = x``), and so do the gradients of the input and of
    every parameter of ``ours`` (matched in order with ``ref_params``; default ``ours``' own parameters, for
    written-out references)."""
    x_ref = x if x_ref is None else x_ref
    xa, xb = x.detach().clone().requires_grad_(), x_ref.detach().clone().requires_grad_()
    params = list(ours.parameters())
    ref_params = params if ref_params is None else list(ref_params)
    # each backward before the next forward: a training BN's statistics update bumps tensors a graph saved
    out = ours(xa)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, [xa, *params], g)
    want = ref(xb)
    expected = torch.autograd.grad(want, [xb, *ref_params], g)
    torch.testing.assert_close(out, want, **tol)
    names = ["x", *(n for n, _ in ours.named_parameters())]
    for name, a, b in zip(names, got, expected, strict=True):
        torch.testing.assert_close(a, b, msg=name, **tol)


def _bn(bn: nn.BatchNorm2d, z: torch.Tensor) -> torch.Tensor:
    """BatchNorm written out: batch statistics (biased variance) in training, running ones in eval."""
    if bn.training:
        mean, var = z.mean((0, 2, 3), keepdim=True), z.var((0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean, var = bn.running_mean.view(1, -1, 1, 1), bn.running_var.view(1, -1, 1, 1)
    return (z - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)


# ------------------------------------------------------------------------------------------- factory
def test_factory_names_and_errors() -> None:
    assert {"se", "eca", "cbam", "channel_attn", "cbam_channel", "spatial_attn", "cbam_spatial", "sa"} <= set(
        GATES
    )
    assert create_attn(None, 8) is None and create_attn("none", 8) is None
    assert isinstance(create_attn("cbam_channel", 32), ChannelAttention)
    assert isinstance(create_attn("cbam_spatial", 32), SpatialAttention)
    with pytest.raises(ValueError, match="unknown attention 'nope'; valid: none, cbam"):
        create_attn("nope", 8)
    with pytest.raises(ValueError, match="unknown conv 'nope'; valid: none"):
        create_conv("nope", 8, 8)
    with pytest.raises(ValueError, match="unknown residual 'nope'; valid: standard"):
        create_residual("nope", 8)
    with pytest.raises(ValueError, match="unknown stage module 'nope'; valid: none, residual_attention"):
        create_stage_module("nope", 8)
    assert create_residual("standard", 8) is None and create_stage_module("none", 8) is None
    with pytest.raises(TypeError):
        create_attn("se", 32, not_an_option=1)


def test_create_conv_none_is_torchvision_conv() -> None:
    conv = create_conv("none", 8, 16, kernel_size=3, stride=2, dilation=2, groups=2)
    assert type(conv) is nn.Conv2d and conv.bias is None
    assert (conv.stride, conv.padding, conv.dilation, conv.groups) == ((2, 2), (2, 2), (2, 2), 2)
    assert conv(torch.randn(1, 8, 9, 9)).shape == (1, 16, 5, 5)
    assert create_conv("none", 4, 4, dtype=torch.float64).weight.dtype == torch.float64
    with pytest.raises(ValueError, match="takes no options"):
        create_conv("none", 4, 4, radix=2)


def test_stage_kwargs_rule() -> None:
    kwargs = {"k_size": [3, 5, 5, 7], "pair": [1, 2], "name": "x", "shared4": [[1, 2, 3, 4]] * 4}
    assert [resolve_stage_kwargs(kwargs, i)["k_size"] for i in range(4)] == [3, 5, 5, 7]
    assert resolve_stage_kwargs(kwargs, 2)["pair"] == [1, 2]
    assert resolve_stage_kwargs(kwargs, 2)["name"] == "x"
    assert resolve_stage_kwargs(kwargs, 3)["shared4"] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="stage_index"):
        resolve_stage_kwargs(kwargs, 4)
    assert resolve_stage_names("se", "k") == ["se"] * 4
    assert resolve_stage_names(["none", "se", "se", "se"], "k")[0] == "none"
    with pytest.raises(ValueError, match="model.backbone.attention must be one name or a list of 4"):
        resolve_stage_names(["se", "se"], "model.backbone.attention")


# ---------------------------------------------------------------------------------------------- SE
def test_se_equation_init_and_size(feature_map: torch.Tensor) -> None:
    se = SqueezeExcite(32).double()
    assert se.fc1.weight.shape == (2, 32, 1, 1) and se.fc1.bias is not None and se.fc2.bias is not None
    assert sum(p.numel() for p in se.parameters()) == 2 * 32 * 2 + 2 + 32
    _randomize(se)
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias

    def equation(x: torch.Tensor) -> torch.Tensor:  # eq. 2-4
        s = torch.sigmoid(torch.relu(x.mean((2, 3)) @ w1.T + b1) @ w2.T + b2)
        return x * s[:, :, None, None]

    _assert_same_function(se, equation, feature_map.double())
    assert SqueezeExcite(32, bias=False).fc1.bias is None
    assert SqueezeExcite(256, reduction=8).fc1.out_channels == 32


@pytest.mark.parametrize("train", [True, False])
def test_se_equals_timm(feature_map: torch.Tensor, train: bool) -> None:
    from timm.layers.squeeze_excite import SEModule

    ours = SqueezeExcite(32).double().train(train)
    _randomize(ours)
    ref = SEModule(32, rd_channels=2, bias=True).double().train(train)
    ref.load_state_dict(ours.state_dict())
    _assert_same_function(ours, ref, feature_map.double(), ref.parameters())


# --------------------------------------------------------------------------------------------- ECA
def test_eca_equals_banded_channel_matrix(feature_map: torch.Tensor) -> None:
    eca = ECA(32, k_size=5).double()
    _randomize(eca)

    def equation(x: torch.Tensor) -> torch.Tensor:  # eq. 4: s_i = sigmoid(sum_j w_j z_{i+j-pad})
        w, c, pad = eca.conv.weight.flatten(), 32, 2
        rows = []
        for i in range(c):
            row = [w[j - i + pad] if abs(j - i) <= pad else w.new_zeros(()) for j in range(c)]
            rows.append(torch.stack(row))
        s = torch.sigmoid(x.mean((2, 3)) @ torch.stack(rows).T)
        return x * s[:, :, None, None]

    _assert_same_function(eca, equation, feature_map.double())


@pytest.mark.parametrize("k", [3, 5, 7])
def test_eca_equals_timm(feature_map: torch.Tensor, k: int) -> None:
    from timm.layers.eca import EcaModule

    ours = ECA(32, k_size=k).double()
    _randomize(ours)
    ref = EcaModule(None, kernel_size=k).double()  # timm ignores kernel_size when channels are given
    ref.load_state_dict(ours.state_dict())
    _assert_same_function(ours, ref, feature_map.double(), ref.parameters())


def test_eca_adaptive_kernel_sizes() -> None:
    assert [adaptive_kernel_size(c) for c in (256, 512, 1024, 2048)] == [5, 5, 5, 7]
    assert [adaptive_kernel_size(c) for c in (64, 128)] == [3, 5]
    assert ECA(2048).k_size == 7 and ECA(2048, k_size=3).conv.weight.numel() == 3
    assert ECA(2048).conv.bias is None
    for bad in (4, 0, "big", 3.0):
        with pytest.raises(ValueError, match="ECA k_size"):
            ECA(64, k_size=bad)


# -------------------------------------------------------------------------------------------- CBAM
def _cbam_channel_equation(ch: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """Paper eq. 2: Mc = sigmoid(MLP(AvgPool(x)) + MLP(MaxPool(x)))."""

    def mlp(v: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(v @ ch.fc1.weight.flatten(1).T + ch.fc1.bias)
        return hidden @ ch.fc2.weight.flatten(1).T + ch.fc2.bias

    mc = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.flatten(2).max(-1).values))
    return x * mc[:, :, None, None]


def _cbam_spatial_equation(sp: SpatialAttention, x: torch.Tensor) -> torch.Tensor:
    """Paper eq. 3 as the official code: Ms = sigmoid(BN(conv7x7([max_c, mean_c])))."""
    pooled = torch.stack([x.max(1).values, x.mean(1)], dim=1)
    return x * torch.sigmoid(_bn(sp.bn, F.conv2d(pooled, sp.conv.weight, padding=3)))


@pytest.mark.parametrize("train", [True, False])
def test_cbam_and_halves_match_equations(feature_map: torch.Tensor, train: bool) -> None:
    x = feature_map.double()
    cbam = CBAM(32).double().train(train)
    _randomize(cbam)

    def equation(t: torch.Tensor) -> torch.Tensor:
        return _cbam_spatial_equation(cbam.spatial, _cbam_channel_equation(cbam.channel, t))

    _assert_same_function(cbam, equation, x)
    _assert_same_function(cbam.channel, lambda t: _cbam_channel_equation(cbam.channel, t), x)
    _assert_same_function(cbam.spatial, lambda t: _cbam_spatial_equation(cbam.spatial, t), x)


@pytest.mark.parametrize("train", [True, False])
def test_cbam_equals_timm(feature_map: torch.Tensor, train: bool) -> None:
    from timm.layers.cbam import CbamModule

    # timm: [mean, max] order, conv + BN (momentum 0.1, weight init 1); same maths with our pool_order option
    ours = CBAM(32, pool_order="avg_max").double().train(train)
    _randomize(ours)
    ref = CbamModule(32, rd_channels=2, mlp_bias=True).double().train(train)
    ref.load_state_dict(
        {
            k.replace("spatial.conv.", "spatial.conv.conv.").replace("spatial.bn.", "spatial.conv.bn."): v
            for k, v in ours.state_dict().items()
        }
    )
    _assert_same_function(ours, ref, feature_map.double(), ref.parameters())


def test_cbam_official_defaults_and_options() -> None:
    cbam = CBAM(64)
    assert cbam.channel.fc1.bias is not None  # official MLP bias
    assert cbam.spatial.conv.bias is None and cbam.spatial.conv.kernel_size == (7, 7)
    assert cbam.spatial.conv.padding == (3, 3)
    assert cbam.spatial.bn.momentum == 0.01 and cbam.spatial.bn.weight.item() == 0.0
    assert cbam.spatial.bn.bias.item() == 0.0
    assert cbam.spatial.pool_order == "max_avg"
    blog = CBAM(64, spatial_norm=False, mlp_bias=False, pool_order="avg_max")
    assert isinstance(blog.spatial.bn, nn.Identity) and blog.channel.fc1.bias is None
    n = sum(p.numel() for p in cbam.parameters())
    assert n == 2 * 64 * 4 + 4 + 64 + 2 * 49 + 2
    with pytest.raises(ValueError, match="pool_order"):
        CBAM(64, pool_order="mean_max")


@pytest.mark.parametrize("train", [True, False])
def test_cbam_spatial_gate_is_half_at_init(feature_map: torch.Tensor, train: bool) -> None:
    sp = SpatialAttention(32).train(train)
    torch.testing.assert_close(sp(feature_map), 0.5 * feature_map)


# --------------------------------------------------------------------------------- Shuffle attention
def test_channel_shuffle_is_the_described_permutation() -> None:
    c = 12
    x = torch.arange(c, dtype=torch.float32).view(1, c, 1, 1).expand(2, c, 3, 3)
    out = channel_shuffle(x, 2)
    perm = [i * (c // 2) + j for j in range(c // 2) for i in range(2)]  # out[2j + i] = in[i * C/2 + j]
    assert out[0, :, 0, 0].tolist() == [float(p) for p in perm]
    torch.testing.assert_close(out, x[:, perm])


def test_sa_init_gate_is_sigmoid_one(feature_map: torch.Tensor) -> None:
    sa = ShuffleAttention(32, groups=4)
    assert sa.cweight.shape == (1, 4, 1, 1) and sa.gn.num_groups == 4 and sa.gn.num_channels == 4
    assert sa.cweight.abs().sum() == 0 and sa.sweight.abs().sum() == 0
    assert (sa.cbias == 1).all() and (sa.sbias == 1).all()
    assert (sa.gn.weight == 1).all() and (sa.gn.bias == 0).all()
    expected = channel_shuffle(feature_map * torch.sigmoid(torch.tensor(1.0)), 2)
    torch.testing.assert_close(sa(feature_map), expected)


def _sa_reference(sa: ShuffleAttention, x: torch.Tensor) -> torch.Tensor:
    """SA written group by group from the paper's equations, then the 2-way channel shuffle."""
    c, g = x.shape[1], sa.groups
    half = c // (2 * g)
    cw, cb, sw, sb = (p.view(half, 1, 1) for p in (sa.cweight, sa.cbias, sa.sweight, sa.sbias))
    gn_w, gn_b = sa.gn.weight.view(half, 1, 1), sa.gn.bias.view(half, 1, 1)
    chunks = []
    for grp in x.split(c // g, dim=1):
        x1, x2 = grp[:, :half], grp[:, half:]
        gate1 = torch.sigmoid(cw * x1.mean((2, 3), keepdim=True) + cb)
        mu = x2.mean((2, 3), keepdim=True)
        var = x2.var((2, 3), unbiased=False, keepdim=True)
        gn = (x2 - mu) / torch.sqrt(var + sa.gn.eps) * gn_w + gn_b
        chunks.append(torch.cat([x1 * gate1, x2 * torch.sigmoid(sw * gn + sb)], dim=1))
    return channel_shuffle(torch.cat(chunks, dim=1), 2)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("g", [4, 1])
def test_sa_matches_group_loop_reference(feature_map: torch.Tensor, g: int, train: bool) -> None:
    sa = ShuffleAttention(32, groups=g).double().train(train)
    _randomize(sa)
    x = feature_map.double()
    x[0, 5] = 3.0  # a constant channel (zero variance) in the spatial half of group 0
    x[1, 6] += 100.0  # mean far from zero relative to the spread
    _assert_same_function(sa, lambda t: _sa_reference(sa, t), x)


def test_sa_groups_validation_and_size() -> None:
    assert sum(p.numel() for p in ShuffleAttention(256).parameters()) == 3 * 256 // 64
    with pytest.raises(ValueError, match=r"channels % \(2 \* groups\) == 0, got channels=96, groups=64"):
        ShuffleAttention(96)
    assert ShuffleAttention(96, groups="auto").groups == 48
    assert auto_groups(32) == 16 and auto_groups(1024) == 64
    with pytest.raises(ValueError, match="even channel count"):
        auto_groups(7)
    with pytest.raises(ValueError, match="positive int or 'auto'"):
        ShuffleAttention(32, groups=0)


# ------------------------------------------------------------------- dtypes, layouts, batch size 1
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", list(GATE_CASES))
def test_gate_channels_last_same_values_and_gradients(
    feature_map: torch.Tensor, name: str, train: bool
) -> None:
    gate = create_attn(name, 32, **GATE_CASES[name]).double().train(train)
    _randomize(gate)
    x = feature_map.double()
    _assert_same_function(gate, gate, x.contiguous(memory_format=torch.channels_last), x_ref=x)


def test_gates_do_not_write_into_their_input(feature_map: torch.Tensor) -> None:
    for name, kwargs in GATE_CASES.items():
        gate = create_attn(name, 32, **kwargs).eval()
        _randomize(gate)
        x = feature_map.clone()
        with torch.no_grad():
            gate(x)
        assert torch.equal(x, feature_map), name


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(GATE_CASES))
def test_gate_autocast_keeps_input_dtype(
    feature_map: torch.Tensor, name: str, dtype: torch.dtype, grad: bool
) -> None:
    gate = create_attn(name, 32, **GATE_CASES[name])
    _randomize(gate)
    gate.eval()
    ref = gate(feature_map)
    x = feature_map.to(dtype).requires_grad_(grad)
    with torch.autocast("cpu", dtype=dtype), torch.set_grad_enabled(grad):
        out = gate(x)
    assert out.shape == ref.shape and out.dtype == dtype and torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), ref.detach(), atol=0.1, rtol=0.05)
    if grad:
        out.float().sum().backward()
        assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("name", list(GATE_CASES))
@pytest.mark.parametrize("hw", [(1, 1), (3, 3)])
def test_gate_batch_size_one_training(name: str, hw: tuple[int, int]) -> None:
    gate = create_attn(name, 32, **GATE_CASES[name]).train()
    x = torch.randn(1, 32, *hw, requires_grad=True)
    out = gate(x)
    out.sum().backward()
    assert out.shape == x.shape and torch.isfinite(x.grad).all()


def test_guarded_batchnorm_single_value_uses_running_stats() -> None:
    bn = GuardedBatchNorm2d(4).train()
    with torch.no_grad():
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0)
    x = torch.randn(1, 4, 1, 1)
    out = bn(x)
    torch.testing.assert_close(out, (x - 1.0) / math.sqrt(4.0 + bn.eps))
    assert (bn.running_mean == 1.0).all() and int(bn.num_batches_tracked) == 0
    x2 = torch.randn(3, 4, 1, 1)
    torch.testing.assert_close(bn(x2), F.batch_norm(x2, None, None, bn.weight, bn.bias, True, 0.0, bn.eps))
    assert int(bn.num_batches_tracked) == 1
    assert set(bn.state_dict()) == set(nn.BatchNorm2d(4).state_dict())


def test_gates_accept_factory_kwargs() -> None:
    for name, kwargs in GATE_CASES.items():
        gate = create_attn(name, 32, dtype=torch.float64, **kwargs)
        assert all(p.dtype == torch.float64 for p in gate.parameters()), name
        assert gate(torch.randn(2, 32, 3, 3, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.slow
@pytest.mark.parametrize("name", ["se", "eca", "cbam", "sa"])
def test_compiled_gate_equals_eager(feature_map: torch.Tensor, name: str) -> None:
    """torch.compile (inductor) of each gate: same outputs and input / parameter gradients, training mode."""
    gate = create_attn(name, 32, **GATE_CASES[name]).train()
    _randomize(gate)
    _assert_same_function(gate, torch.compile(gate), feature_map, gate.parameters(), atol=1e-5, rtol=1e-4)
