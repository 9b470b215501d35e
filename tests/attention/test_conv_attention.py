"""3x3 conv replacements (SK, split attention, CondConv, DynamicConv, GSA): equations against plain
references written here, timm parity with copied weights, known special cases, dtypes and layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import CondConv2d as TimmCondConv2d
from timm.layers import SelectiveKernel as TimmSelectiveKernel
from timm.layers import SplitAttn as TimmSplitAttn
from torch import nn

from video_attn.models.attention import CONVS, create_conv
from video_attn.models.attention.cond_conv import CondConv2d
from video_attn.models.attention.dynamic_conv import DynamicConv2d
from video_attn.models.attention.global_self_attention import GlobalSelfAttention
from video_attn.models.attention.selective_kernel import SelectiveKernel
from video_attn.models.attention.split_attention import SplitAttn

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise_bn(module: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode comparisons exercise them."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


# ------------------------------------------------------------------------------------------------ SK
def test_registry_and_norm_act_flags() -> None:
    assert CONVS == {
        "sk": SelectiveKernel,
        "splat": SplitAttn,
        "condconv": CondConv2d,
        "dynamic": DynamicConv2d,
        "gsa": GlobalSelfAttention,
    }
    assert SelectiveKernel.includes_norm_act and SplitAttn.includes_norm_act
    assert not (CondConv2d.includes_norm_act or DynamicConv2d.includes_norm_act)
    assert not GlobalSelfAttention.includes_norm_act
    m = create_conv("sk", 16, 32, 3, stride=2, kernel_sizes=[3, 5, 7])
    assert isinstance(m, SelectiveKernel) and m.num_paths == 3
    # "5x5" and "7x7" are dilated 3x3 convs (paper section 3.1)
    assert [p.conv.dilation[0] for p in m.paths] == [1, 2, 3]
    assert all(p.conv.kernel_size == (3, 3) for p in m.paths)


def test_sk_attention_width_and_param_count() -> None:
    # d = max(C / 16, 32): the paper's L = 32 floor
    assert SelectiveKernel(64, 64).attn.fc_reduce.out_channels == 32
    assert SelectiveKernel(1024, 1024).attn.fc_reduce.out_channels == 64
    c_in, c, d = 16, 24, 32
    m = SelectiveKernel(c_in, c, groups=4)
    branch = c * (c_in // 4) * 9 + 2 * c  # grouped conv + BN affine
    expected = 2 * branch + c * d + 2 * d + d * 2 * c
    assert sum(p.numel() for p in m.parameters()) == expected


@pytest.mark.parametrize("split_input", [False, True])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_sk_matches_timm(split_input: bool, stride: int, dilation: int) -> None:
    ours = SelectiveKernel(
        16, 32, stride=stride, dilation=dilation, groups=2, split_input=split_input, attn_channels=8
    )
    ref = TimmSelectiveKernel(
        16,
        32,
        kernel_size=[3, 5],
        stride=stride,
        dilation=dilation,
        groups=2,
        rd_channels=8,
        split_input=split_input,
    )
    _randomise_bn(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 9, 7)
    for train in (True, False):
        ours.train(train)
        ref.train(train)
        torch.testing.assert_close(ours(x), ref(x), atol=ATOL, rtol=ATOL)


def test_sk_identical_branches_equal_one_branch() -> None:
    # a + b = 1 per channel, so two identical branches give back that branch whatever the attention says
    m = SelectiveKernel(8, 16, kernel_sizes=(3, 3))
    _randomise_bn(m)
    m.paths[1].load_state_dict(m.paths[0].state_dict())
    x = torch.randn(3, 8, 6, 5)
    # eval first: a training call of paths[0] alone would move its running statistics away from paths[1]'s
    for train in (False, True):
        m.train(train)
        torch.testing.assert_close(m(x), m.paths[0](x), atol=ATOL, rtol=ATOL)


def test_sk_branch_weights_are_a_softmax() -> None:
    m = SelectiveKernel(8, 16)
    u = torch.randn(2, 2, 16, 5, 5)
    a = m.attn(u)
    assert a.shape == (2, 2, 16, 1, 1)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, 16, 1, 1))


# ----------------------------------------------------------------------------------- split attention
def test_splat_attention_width_follows_official_rule() -> None:
    # inter_channels = max(in_channels * radix // 4, 32), no rounding to multiples of 8 (timm rounds)
    assert SplitAttn(64, 64).fc1.out_channels == 32
    assert SplitAttn(256, 256).fc1.out_channels == 128
    assert SplitAttn(200, 200).fc1.out_channels == 100
    assert SplitAttn(40, 40).fc1.out_channels == 32
    assert SplitAttn(64, 64, radix=4).fc2.out_channels == 256


@pytest.mark.parametrize("radix,groups,stride", [(2, 1, 1), (2, 2, 2), (4, 2, 1), (1, 1, 2)])
def test_splat_matches_timm(radix: int, groups: int, stride: int) -> None:
    ours = SplitAttn(32, 32, stride=stride, groups=groups, radix=radix, attn_channels=16)
    ref = TimmSplitAttn(
        32,
        32,
        kernel_size=3,
        stride=stride,
        groups=groups,
        radix=radix,
        rd_channels=16 // radix if radix > 1 else 16,
        norm_layer=nn.BatchNorm2d,
    )
    assert ref.fc1.out_channels == 16
    _randomise_bn(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 32, 7, 6)
    for train in (True, False):
        ours.train(train)
        ref.train(train)
        torch.testing.assert_close(ours(x), ref(x), atol=ATOL, rtol=ATOL)


def test_splat_radix1_is_a_sigmoid_gate() -> None:
    m = SplitAttn(16, 16, radix=1).eval()
    _randomise_bn(m)
    x = torch.randn(2, 16, 5, 6)
    u = F.relu(m.bn0(m.conv(x)))
    s = u.mean(dim=(2, 3), keepdim=True)
    gate = torch.sigmoid(m.fc2(F.relu(m.bn1(m.fc1(s)))))
    torch.testing.assert_close(m(x), u * gate, atol=ATOL, rtol=ATOL)


def test_splat_radix2_reference() -> None:
    # V = sum_r a_r U_r with a = softmax over the two splits of fc2's output (cardinality 1)
    m = SplitAttn(16, 8, radix=2).eval()
    _randomise_bn(m)
    x = torch.randn(2, 16, 5, 5)
    u = F.relu(m.bn0(m.conv(x)))
    u1, u2 = u[:, :8], u[:, 8:]
    z = F.relu(m.bn1(m.fc1((u1 + u2).mean(dim=(2, 3), keepdim=True))))
    logits = m.fc2(z)
    a = torch.softmax(torch.stack([logits[:, :8], logits[:, 8:]]), dim=0)
    torch.testing.assert_close(m(x), a[0] * u1 + a[1] * u2, atol=ATOL, rtol=ATOL)


# ----------------------------------------------------------------------------------- CondConv / Dynamic
def _per_sample_reference(x, weight, bias, mix, stride, padding, dilation, groups):
    """Plain loop: example i is convolved with sum_e mix[i, e] * W_e; ``weight`` (E, O, C/g, k, k)."""
    outs = []
    for i in range(x.shape[0]):
        w = (mix[i].view(-1, 1, 1, 1, 1) * weight).sum(0)
        b = (mix[i].view(-1, 1) * bias).sum(0) if bias is not None else None
        outs.append(
            F.conv2d(x[i : i + 1], w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
        )
    return torch.cat(outs)


@pytest.mark.parametrize("stride,dilation,groups,bias", [(1, 1, 1, False), (2, 1, 2, True), (1, 2, 4, True)])
def test_condconv_batched_equals_per_sample_loop(stride, dilation, groups, bias) -> None:
    m = CondConv2d(8, 12, stride=stride, dilation=dilation, groups=groups, num_experts=3, bias=bias)
    x = torch.randn(3, 8, 7, 6)
    routing = torch.sigmoid(m.routing_fn(x.mean(dim=(2, 3))))
    torch.testing.assert_close(m.routing(x), routing)
    expected = _per_sample_reference(
        x, m.weight.view(3, *m.weight_shape), m.bias, routing, stride, dilation, dilation, groups
    )
    torch.testing.assert_close(m(x), expected, atol=ATOL, rtol=ATOL)


def test_condconv_routing_is_sigmoid_not_softmax() -> None:
    m = CondConv2d(8, 8, num_experts=4)
    nn.init.constant_(m.routing_fn.weight, 0.0)
    nn.init.constant_(m.routing_fn.bias, 3.0)
    r = m.routing(torch.randn(2, 8, 4, 4))
    torch.testing.assert_close(r, torch.full((2, 4), torch.sigmoid(torch.tensor(3.0)).item()))
    assert (r.sum(dim=1) > 1).all()


@pytest.mark.parametrize("stride", [1, 2])
def test_condconv_matches_timm(stride: int) -> None:
    ours = CondConv2d(8, 16, stride=stride, num_experts=4, bias=True, route_from_input=False)
    ref = TimmCondConv2d(8, 16, kernel_size=3, stride=stride, num_experts=4, bias=True)
    ours.load_state_dict(ref.state_dict())  # same flattened expert layout and names
    x = torch.randn(3, 8, 9, 8)
    routing = torch.rand(3, 4)
    torch.testing.assert_close(ours(x, routing), ref(x, routing), atol=ATOL, rtol=ATOL)


def test_condconv_external_routing_errors() -> None:
    m = CondConv2d(8, 8, route_from_input=False)
    assert m.routing_fn is None
    x = torch.randn(2, 8, 4, 4)
    with pytest.raises(RuntimeError, match="route_from_input=False"):
        m(x)
    with pytest.raises(ValueError, match="routing must have shape"):
        m(x, torch.rand(2, 3))
    assert m(x, torch.rand(2, 4)).shape == (2, 8, 4, 4)


def test_dynamic_conv_batched_equals_per_sample_loop_and_param_count() -> None:
    m = DynamicConv2d(16, 8, stride=2, groups=2, bias=True)
    m.set_temperature(1.0)
    x = torch.randn(3, 16, 7, 7)
    pi = torch.softmax(m.fc2(F.relu(m.fc1(x.mean(dim=(2, 3))))), dim=1)
    torch.testing.assert_close(m.attention(x), pi)
    expected = _per_sample_reference(x, m.weight.view(4, *m.weight_shape), m.bias, pi, 2, 1, 1, 2)
    torch.testing.assert_close(m(x), expected, atol=ATOL, rtol=ATOL)
    # K = 4 kernels (+ biases), squeeze 16 -> 4 -> 4 with biases
    assert m.weight.shape == (4, 8 * 8 * 3 * 3) and m.weight_shape == (8, 8, 3, 3)
    hidden = 4
    expected_params = 4 * 8 * 8 * 9 + 4 * 8 + 16 * hidden + hidden + hidden * 4 + 4
    assert sum(p.numel() for p in m.parameters()) == expected_params


def test_dynamic_conv_temperature() -> None:
    m = DynamicConv2d(16, 16)
    assert float(m.temperature) == 30.0  # paper's starting temperature
    with torch.no_grad():
        m.fc2.weight.mul_(50.0)  # sharp logits, so the temperature visibly matters
    x = torch.randn(4, 16, 5, 5)
    m.set_temperature(1.0)
    sharp = m.attention(x)
    m.set_temperature(1e4)
    flat = m.attention(x)
    torch.testing.assert_close(flat.sum(dim=1), torch.ones(4))
    assert (flat - 0.25).abs().max() < 1e-3
    assert (sharp - 0.25).abs().max() > 0.1
    # the temperature is state: a checkpoint restores it
    other = DynamicConv2d(16, 16)
    other.load_state_dict(m.state_dict())
    assert float(other.temperature) == pytest.approx(1e4)
    with pytest.raises(ValueError, match="temperature"):
        m.set_temperature(0.0)


# ------------------------------------------------------------------------------------------------ GSA
def _gsa_content_reference(m: GlobalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    nh, dk, dv = m.heads, m.dim_key, m.dim_value
    qkv = m.qkv(x).reshape(b, nh, 2 * dk + dv, h * w)
    outs = []
    for head in range(nh):
        q, k, v = qkv[:, head, :dk], qkv[:, head, dk : 2 * dk], qkv[:, head, 2 * dk :]
        k = torch.softmax(k, dim=-1)  # over positions
        context = k @ v.transpose(1, 2)  # (b, dk, dv)
        outs.append(context.transpose(1, 2) @ q)  # (b, dv, hw)
    return torch.cat(outs, dim=1).reshape(b, nh * dv, h, w)


def _gsa_positional_reference(m: GlobalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    nh, dk, dv, off = m.heads, m.dim_key, m.dim_value, m.max_size - 1
    q, _, v = m.qkv(x).reshape(b, nh, 2 * dk + dv, h, w).split([dk, dk, dv], dim=2)
    col = torch.zeros(b, nh, dv, h, w)
    for a in range(h):
        for i in range(h):
            weight = (q[:, :, :, a, :] * m.rel_col[i - a + off].view(1, 1, dk, 1)).sum(2, keepdim=True)
            col[:, :, :, a, :] += weight * v[:, :, :, i, :]
    out = torch.zeros(b, nh, dv, h, w)
    for c in range(w):
        for j in range(w):
            weight = (q[..., c] * m.rel_row[j - c + off].view(1, 1, dk, 1)).sum(2, keepdim=True)
            out[..., c] += weight * col[..., j]
    return out.reshape(b, nh * dv, h, w)


def test_gsa_content_branch_matches_reference() -> None:
    m = GlobalSelfAttention(8, 16, heads=4, dim_key=3, positional=False)
    assert m.rel_col is None
    x = torch.randn(2, 8, 5, 6)
    torch.testing.assert_close(m(x), _gsa_content_reference(m, x), atol=ATOL, rtol=ATOL)


def test_gsa_positional_branch_matches_reference() -> None:
    m = GlobalSelfAttention(8, 16, heads=2, max_size=7)
    assert m.rel_col.shape == (13, 8) and m.rel_row.shape == (13, 8)
    x = torch.randn(2, 8, 4, 6)
    expected = _gsa_content_reference(m, x) + _gsa_positional_reference(m, x)
    torch.testing.assert_close(m(x), expected, atol=1e-4, rtol=1e-4)


def test_gsa_shapes_stride_and_errors() -> None:
    m = GlobalSelfAttention(8, 16, stride=2, max_size=9)
    # avg-pool after attention; ceil so odd sizes match a strided 3x3 conv
    assert m(torch.randn(2, 8, 7, 8)).shape == (2, 16, 4, 4)
    assert m(torch.randn(1, 8, 9, 9)).shape == nn.Conv2d(8, 16, 3, 2, 1)(torch.randn(1, 8, 9, 9)).shape
    with pytest.raises(ValueError, match="max_size=9"):
        m(torch.randn(1, 8, 10, 4))
    with pytest.raises(ValueError, match="grouped"):
        GlobalSelfAttention(8, 16, groups=2)
    with pytest.raises(ValueError, match="heads"):
        GlobalSelfAttention(8, 12, heads=8)


# ---------------------------------------------------------------------------- shared module behaviour
CASES = {
    "sk": {},
    "splat": {},
    "condconv": {},
    "dynamic": {},
    "gsa": {"heads": 4, "max_size": 16},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_size_one_training_step(name: str) -> None:
    m = create_conv(name, 16, 16, 3, stride=2, **CASES[name]).train()
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    out = m(x)
    assert out.shape == (1, 16, 4, 4)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", sorted(CASES))
def test_channels_last_bf16_autocast_and_factory_kwargs(name: str) -> None:
    m = create_conv(name, 16, 16, 3, **CASES[name]).eval()
    _randomise_bn(m)
    x = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(
            m(x.contiguous(memory_format=torch.channels_last)), ref, atol=ATOL, rtol=ATOL
        )
        m_cl = create_conv(name, 16, 16, 3, **CASES[name]).eval()
        m_cl.load_state_dict(m.state_dict())
        m_cl = m_cl.to(memory_format=torch.channels_last)
        torch.testing.assert_close(
            m_cl(x.contiguous(memory_format=torch.channels_last)), ref, atol=ATOL, rtol=ATOL
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(x)
    assert low.dtype == torch.bfloat16
    scale = ref.abs().max()
    assert ((low.float() - ref).abs().max() / scale) < 0.1
    m64 = create_conv(name, 16, 16, 3, dtype=torch.float64, **CASES[name])
    assert all(p.dtype == torch.float64 for p in m64.parameters())
    assert m64(x.double()).dtype == torch.float64
