"""Attention gates: equations against plain references, official init, timm parity, dtypes and layouts."""

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
from video_attn.models.attention.cbam import _channel_max

# the official-default gate presets of REFERENCE.md section 3, with the options that fit tiny widths
GATE_CASES = {
    "se": {},
    "eca": {},
    "cbam": {},
    "channel_attn": {},
    "spatial_attn": {},
    "sa": {"groups": 4},
}


def _randomize(module: nn.Module) -> None:
    """Random parameters and BN statistics, so parity checks do not pass on a degenerate init."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


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
    with pytest.raises(ValueError, match="unknown stage module 'nope'"):
        create_stage_module("nope", 8)
    assert create_residual("standard", 8) is None
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


# ------------------------------------------------------------------------------------- SE, equations
def test_se_matches_equation(feature_map: torch.Tensor) -> None:
    se = SqueezeExcite(32)
    assert se.fc1.weight.shape == (2, 32, 1, 1) and se.fc1.bias is not None and se.fc2.bias is not None
    _randomize(se)
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias
    z = feature_map.mean((2, 3))
    s = torch.sigmoid(torch.relu(z @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(se(feature_map), feature_map * s[:, :, None, None])
    assert SqueezeExcite(32, bias=False).fc1.bias is None
    assert SqueezeExcite(256, reduction=8).fc1.out_channels == 32


def test_eca_equals_banded_channel_matrix(feature_map: torch.Tensor) -> None:
    eca = ECA(32, k_size=5)
    _randomize(eca)
    w = eca.conv.weight.flatten()
    c, pad = 32, 2
    band = torch.zeros(c, c)
    for i in range(c):
        for j in range(max(0, i - pad), min(c, i + pad + 1)):
            band[i, j] = w[j - i + pad]  # cross-correlation: output i sees input i - pad .. i + pad
    s = torch.sigmoid(feature_map.mean((2, 3)) @ band.T)
    torch.testing.assert_close(eca(feature_map), feature_map * s[:, :, None, None])


def test_eca_adaptive_kernel_sizes() -> None:
    assert [adaptive_kernel_size(c) for c in (256, 512, 1024, 2048)] == [5, 5, 5, 7]
    assert [adaptive_kernel_size(c) for c in (64, 128)] == [3, 5]
    assert ECA(2048).k_size == 7 and ECA(2048, k_size=3).conv.weight.numel() == 3
    for bad in (4, 0, "big", 3.0):
        with pytest.raises(ValueError, match="ECA k_size"):
            ECA(64, k_size=bad)


@pytest.mark.parametrize("grad", [False, True])  # inference path / training path with its own backward
def test_cbam_matches_equation(feature_map: torch.Tensor, grad: bool) -> None:
    cbam = CBAM(32).eval().double()
    _randomize(cbam)
    ch, sp = cbam.channel, cbam.spatial

    def mlp(v: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(v @ ch.fc1.weight.flatten(1).T + ch.fc1.bias)
        return hidden @ ch.fc2.weight.flatten(1).T + ch.fc2.bias

    x = feature_map.double().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        mc = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.flatten(2).max(-1).values))
        x1 = x * mc[:, :, None, None]
        pooled = torch.stack([x1.max(1).values, x1.mean(1)], dim=1)  # official [max, mean]
        conv = F.conv2d(pooled, sp.conv.weight, padding=3)
        bn = sp.bn
        normed = (conv - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        expected = x1 * torch.sigmoid(normed)
        identity = torch.randn_like(expected)
        out, fused = cbam(x), cbam.gate_add(x, identity)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(fused, identity + expected)
    if grad:  # gradients of the input and of every parameter equal autograd through the equation
        g = torch.randn_like(out)
        inputs = [x, *cbam.parameters()]
        for got, want in zip(
            torch.autograd.grad(fused, inputs, g), torch.autograd.grad(expected, inputs, g), strict=True
        ):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", [(2, 32, 6, 5), (3, 12, 4, 4), (2, 7, 3, 3), (2, 256, 2, 3)])
def test_cbam_channel_max_equals_torch_max(shape: tuple[int, ...], ties: bool) -> None:
    """The blocked channel max behind CBAM's training node: torch.max's values and first-occurrence
    indices, in both layouts (C = 7 has no block split)."""
    x = torch.randint(0, 3, shape).float() if ties else torch.randn(shape)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = x.contiguous(memory_format=fmt)
        values, index = _channel_max(x)
        expected = x.max(dim=1, keepdim=True)
        assert torch.equal(values, expected.values) and torch.equal(index, expected.indices)


def test_cbam_training_node_with_frozen_parts(feature_map: torch.Tensor) -> None:
    """Frozen parameters and an input without grad: the node returns gradients for the rest only."""
    cbam = CBAM(32).train()
    _randomize(cbam)
    cbam.spatial.conv.weight.requires_grad_(False)
    cbam.channel.fc1.bias.requires_grad_(False)
    trainable = [p for p in cbam.parameters() if p.requires_grad]
    identity = torch.randn_like(feature_map)
    out = cbam.gate_add(feature_map, identity)
    assert type(out.grad_fn).__name__ == "_CBAMTrainingBackward"  # the custom node, not the equation
    ref = cbam._equation(feature_map, identity)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, trainable, g), torch.autograd.grad(ref, trainable, g)
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_cbam_official_defaults_and_options() -> None:
    cbam = CBAM(64)
    assert cbam.channel.fc1.bias is not None  # official MLP bias
    assert cbam.spatial.conv.bias is None and cbam.spatial.conv.kernel_size == (7, 7)
    assert cbam.spatial.bn.momentum == 0.01 and cbam.spatial.bn.weight.item() == 0.0
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
    assert sa.cweight.shape == (1, 4, 1, 1)
    assert sa.cweight.abs().sum() == 0 and sa.sweight.abs().sum() == 0
    assert (sa.cbias == 1).all() and (sa.sbias == 1).all()
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


@pytest.mark.parametrize("grad", [True, False])  # training path (custom node / autograd) / inference path
@pytest.mark.parametrize("g", [4, 1])  # even G writes the shuffled output directly; odd G concatenates first
def test_sa_matches_group_loop_reference(feature_map: torch.Tensor, g: int, grad: bool) -> None:
    """Outputs and, with autograd on, the gradients of the input, the identity and every parameter equal
    autograd through the group-by-group equations (float64), in both layouts."""
    sa = ShuffleAttention(32, groups=g).double()
    _randomize(sa)
    feature_map = feature_map.double()
    feature_map[0, 5] = 3.0  # a constant channel (zero variance) in the spatial half of group 0
    feature_map[1, 6] += 100.0  # mean far from zero relative to the spread
    x = feature_map.requires_grad_(grad)
    identity = torch.randn_like(feature_map).requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        expected = _sa_reference(sa, x)
        out, fused = sa(x), sa.gate_add(x, identity)
        fused_cl = sa.gate_add(x.contiguous(memory_format=torch.channels_last), identity)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(fused, identity + expected)
    torch.testing.assert_close(fused_cl, identity + expected)
    if grad:
        if g % 2 == 0:
            assert type(fused.grad_fn).__name__ == "_ShuffleAttentionTrainingBackward"
        upstream = torch.randn_like(expected)
        inputs = [x, identity, *sa.parameters()]
        want = torch.autograd.grad(identity + expected, inputs, upstream, retain_graph=True)
        for result in (fused, fused_cl):
            got = torch.autograd.grad(result, inputs, upstream, retain_graph=True)
            for name, a, b in zip(["x", "identity", *dict(sa.named_parameters())], got, want, strict=True):
                torch.testing.assert_close(a, b, msg=name)
        got = torch.autograd.grad(out, [x, *sa.parameters()], upstream)
        for a, b in zip(got, torch.autograd.grad(expected, [x, *sa.parameters()], upstream), strict=True):
            torch.testing.assert_close(a, b)


def test_sa_training_node_with_frozen_parts(feature_map: torch.Tensor) -> None:
    """Frozen parameters and an input without grad: the node returns gradients for the rest only."""
    sa = ShuffleAttention(32, groups=4).train()
    _randomize(sa)
    sa.gn.weight.requires_grad_(False)
    sa.cbias.requires_grad_(False)
    trainable = [p for p in sa.parameters() if p.requires_grad]
    identity = torch.randn_like(feature_map)
    out = sa.gate_add(feature_map, identity)
    assert type(out.grad_fn).__name__ == "_ShuffleAttentionTrainingBackward"
    ref = identity + _sa_reference(sa, feature_map)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, trainable, g), torch.autograd.grad(ref, trainable, g)
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    for p in trainable:
        p.requires_grad_(False)
    x = feature_map.clone().requires_grad_()  # a frozen gate in a trained network
    got, want = (torch.autograd.grad(y, x, g)[0] for y in (sa.gate_add(x, identity), _sa_reference(sa, x)))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    out = sa.gate_add(feature_map, identity.requires_grad_())  # only the identity needs a gradient
    assert torch.equal(torch.autograd.grad(out, identity, g)[0], g)


@pytest.mark.parametrize("grad", [False, True])
def test_sa_gate_add_result_dtype_is_promoted(feature_map: torch.Tensor, grad: bool) -> None:
    """A bfloat16 x (under autocast) with a float32 identity gives a float32 sum, as ``x * gate + identity``
    would: the slot-written output is not rounded to x's dtype."""
    sa = ShuffleAttention(32, groups=4).train(grad)
    _randomize(sa)
    identity = torch.randn_like(feature_map)
    expected = identity + _sa_reference(sa, feature_map)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(grad):
        out = sa.gate_add(feature_map.to(torch.bfloat16).requires_grad_(grad), identity)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.detach(), expected.detach(), atol=0.1, rtol=0.05)


def test_sa_groups_validation() -> None:
    assert sum(p.numel() for p in ShuffleAttention(256).parameters()) == 3 * 256 // 64
    with pytest.raises(ValueError, match=r"channels % \(2 \* groups\) == 0, got channels=96, groups=64"):
        ShuffleAttention(96)
    assert ShuffleAttention(96, groups="auto").groups == 48
    assert auto_groups(32) == 16 and auto_groups(1024) == 64
    with pytest.raises(ValueError, match="even channel count"):
        auto_groups(7)


# ------------------------------------------------------------------------------------- timm parity
def test_parity_timm_se(feature_map: torch.Tensor) -> None:
    from timm.layers.squeeze_excite import SEModule

    ours = SqueezeExcite(32)
    _randomize(ours)
    ref = SEModule(32, rd_channels=2, bias=True)
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(feature_map), ref(feature_map), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_parity_timm_eca(feature_map: torch.Tensor, k: int) -> None:
    from timm.layers.eca import EcaModule

    ours = ECA(32, k_size=k)
    _randomize(ours)
    ref = EcaModule(None, kernel_size=k)  # timm ignores kernel_size when channels are given
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(feature_map), ref(feature_map), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_parity_timm_cbam(feature_map: torch.Tensor, train: bool) -> None:
    from timm.layers.cbam import CbamModule

    # timm: MLP bias optional, [mean, max] order, conv + BN (momentum 0.1, weight init 1)
    ours = CBAM(32, pool_order="avg_max", mlp_bias=True).train(train)
    _randomize(ours)
    ref = CbamModule(32, rd_channels=2, mlp_bias=True).train(train)
    state = ours.state_dict()
    mapped = {
        k.replace("spatial.conv.", "spatial.conv.conv.").replace("spatial.bn.", "spatial.conv.bn."): v
        for k, v in state.items()
    }
    ref.load_state_dict(mapped)
    # with an input that needs grad, our max pooling takes the index-based path: same values and grads
    x_ours, x_ref = feature_map.clone().requires_grad_(), feature_map.clone().requires_grad_()
    out_ours, out_ref = ours(x_ours), ref(x_ref)
    torch.testing.assert_close(out_ours, out_ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(ours(feature_map), out_ref, atol=1e-5, rtol=1e-5)
    weight = torch.randn_like(out_ref)
    (out_ours * weight).sum().backward()
    (out_ref * weight).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
    fc1_grads = ours.channel.fc1.weight.grad, ref.channel.fc1.weight.grad
    torch.testing.assert_close(*fc1_grads, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------- dtypes, layouts, batch size 1
@pytest.mark.parametrize("name", list(GATE_CASES))
def test_gate_channels_last_and_backward(feature_map: torch.Tensor, name: str) -> None:
    gate = create_attn(name, 32, **GATE_CASES[name])
    _randomize(gate)
    gate.eval()
    x = feature_map.clone().requires_grad_(True)
    x_cl = feature_map.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    out, out_cl = gate(x), gate(x_cl)
    torch.testing.assert_close(out_cl, out, atol=1e-6, rtol=1e-5)
    out.square().sum().backward()
    out_cl.square().sum().backward()  # CBAM's custom backward scatters into a channels_last gradient
    assert x.grad is not None and torch.isfinite(x.grad).all()
    torch.testing.assert_close(x_cl.grad, x.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("grad", [True, False])  # some gates take a different path for inference
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(GATE_CASES))
def test_gate_autocast(feature_map: torch.Tensor, name: str, dtype: torch.dtype, grad: bool) -> None:
    gate = create_attn(name, 32, **GATE_CASES[name])
    _randomize(gate)
    gate.eval()
    ref = gate(feature_map)
    x = feature_map.to(dtype).requires_grad_(grad)
    with torch.autocast("cpu", dtype=dtype), torch.set_grad_enabled(grad):
        out = gate(x)
    assert out.shape == ref.shape and out.dtype == dtype and torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
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
def test_gate_torch_compile(feature_map: torch.Tensor, name: str) -> None:
    gate = create_attn(name, 32, **GATE_CASES[name])
    _randomize(gate)
    gate.eval()
    compiled = torch.compile(gate)
    torch.testing.assert_close(compiled(feature_map), gate(feature_map), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cbam", "sa"])
def test_training_node_gate_under_torch_compile(feature_map: torch.Tensor, name: str) -> None:
    """Under torch.compile CBAM and SA train through their equations (inductor fuses them): same outputs
    and gradients as their eager custom autograd nodes."""
    gate = create_attn(name, 32, **GATE_CASES[name]).train()
    _randomize(gate)
    identity = torch.randn_like(feature_map)
    xa, xb = feature_map.clone().requires_grad_(), feature_map.clone().requires_grad_()
    compiled, eager = torch.compile(gate.gate_add)(xa, identity), gate.gate_add(xb, identity)
    assert type(eager.grad_fn).__name__.endswith("TrainingBackward")
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    g, params = torch.randn_like(eager), list(gate.parameters())
    grads = torch.autograd.grad(compiled, [xa, *params], g), torch.autograd.grad(eager, [xb, *params], g)
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["se", "eca", "cbam", "channel_attn", "spatial_attn"])
def test_gate_add_equals_gate_then_add(feature_map: torch.Tensor, name: str) -> None:
    gate = create_attn(name, 32).train()
    _randomize(gate)
    identity = torch.randn_like(feature_map)
    xa, xb = feature_map.clone().requires_grad_(), feature_map.clone().requires_grad_()
    fused, plain = gate.gate_add(xa, identity), gate(xb) + identity
    torch.testing.assert_close(fused, plain)
    fused.square().sum().backward()
    plain.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["se", "eca", "cbam", "channel_attn", "spatial_attn"])
def test_gate_add_reuses_input_only_without_autograd(feature_map: torch.Tensor, name: str) -> None:
    """Under no_grad gate_add may use x (the block's temporary) as scratch and writes its float32 result
    there, like torchvision's ``out += identity``; a result of another dtype is a new tensor; with autograd
    on, x is never touched."""
    gate = create_attn(name, 32).eval()
    _randomize(gate)
    identity = torch.randn_like(feature_map)
    with torch.no_grad():
        expected = gate(feature_map) + identity
        x = feature_map.clone()
        out = gate.gate_add(x, identity)
        assert out.data_ptr() == x.data_ptr()
        torch.testing.assert_close(out, expected)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = gate.gate_add(feature_map.to(torch.bfloat16), identity)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected, atol=0.1, rtol=0.05)
    x = feature_map.clone()
    out = gate.gate_add(x, identity)
    assert torch.equal(x, feature_map)
    torch.testing.assert_close(out, expected)
