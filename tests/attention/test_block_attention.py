"""Block- and stage-level modules (Highway residual, Residual Attention) and tiny ResNets built with every
conv replacement / residual / stage module: init facts, references written here, one training step."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from video_attn.models.attention import RESIDUALS, STAGE_MODULES, create_residual, create_stage_module
from video_attn.models.attention.highway import Highway
from video_attn.models.attention.residual_attention import PreActBottleneckUnit, ResidualAttention
from video_attn.models.backbones.resnet import resnet18, resnet50


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add contention on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -------------------------------------------------------------------------------------------- Highway
def test_highway_starts_near_carry() -> None:
    assert RESIDUALS == {"highway": Highway}
    m = create_residual("highway", 8)
    branch, identity = torch.randn(2, 8, 5, 4), torch.randn(2, 8, 5, 4)
    t0 = 1.0 / (1.0 + math.exp(2.0))  # sigmoid(-2) = 0.119: zero W_T, so every gate is exactly sigmoid(b_T)
    torch.testing.assert_close(m.transform_gate(identity), torch.full_like(identity, t0))
    torch.testing.assert_close(m(branch, identity), t0 * branch + (1 - t0) * identity)
    m1 = Highway(8, gate_bias=-1.0)
    torch.testing.assert_close(
        m1.transform_gate(identity), torch.full_like(identity, torch.sigmoid(torch.tensor(-1.0)).item())
    )


def test_highway_equation_and_gradient() -> None:
    m = Highway(6, zero_init=False)
    assert m.gate.weight.abs().sum() > 0 and torch.all(m.gate.bias == -2.0)
    branch = torch.randn(2, 6, 3, 3)
    identity = torch.randn(2, 6, 3, 3)
    # y = H(x) T(x) + x (1 - T(x)), T = sigmoid(W_T x + b_T) per channel and pixel (1x1 conv on the identity)
    t = torch.sigmoid(
        torch.einsum("oc,bchw->bohw", m.gate.weight[:, :, 0, 0], identity) + m.gate.bias.view(1, -1, 1, 1)
    )
    torch.testing.assert_close(m(branch, identity), branch * t + identity * (1 - t))
    m0 = Highway(6)
    m0(branch, identity).sum().backward()
    assert m0.gate.weight.grad.abs().sum() > 0  # zero init still learns


# ---------------------------------------------------------------------------------- Residual Attention
def test_residual_attention_param_count_and_registry() -> None:
    assert STAGE_MODULES == {"residual_attention": ResidualAttention}
    m = create_stage_module("residual_attention", 16, depth=2)
    # pre 1 + trunk 2 + post 1 + mask: down 2, skip 1, bottom 1, up 1 = 9 pre-activation bottleneck units
    unit = 2 * 16 + 16 * 4 + 2 * 4 + 4 * 4 * 9 + 2 * 4 + 4 * 16
    mask_out = 2 * 16 + 16 * 16 + 2 * 16 + 16 * 16
    assert sum(p.numel() for p in m.parameters()) == 9 * unit + mask_out
    assert sum(isinstance(u, PreActBottleneckUnit) for u in m.modules()) == 9


def test_residual_attention_hourglass_wiring() -> None:
    m = ResidualAttention(8, depth=2).eval()
    x = torch.randn(2, 8, 11, 9)
    # reference written out: two max-pool down steps, one skip, bilinear up to the exact skip / input sizes
    d1 = m.mask_down[0](F.max_pool2d(x, 3, 2, 1))
    skip = m.mask_skip[0](d1)
    d2 = m.mask_bottom(m.mask_down[1](F.max_pool2d(d1, 3, 2, 1)))
    up = m.mask_up[0](F.interpolate(d2, size=d1.shape[-2:], mode="bilinear", align_corners=False) + skip)
    full = F.interpolate(up, size=x.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(m.mask(x), torch.sigmoid(m.mask_out(full)))
    pre = m.pre(x)
    torch.testing.assert_close(m(x), m.post((1 + m.mask(pre)) * m.trunk(pre)))


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_residual_attention_zero_init_is_soft_amplification(depth: int, mode: str) -> None:
    # zero_init_last: every residual unit is the identity, so H(x) = (1 + M(x)) * x with M in (0, 1)
    m = ResidualAttention(8, depth=depth, upsample_mode=mode, zero_init_last=True).eval()
    x = torch.randn(2, 8, 7, 10)
    with torch.no_grad():
        out = m(x)
        mask = m.mask(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, (1 + mask) * x)
    assert ((mask > 0) & (mask < 1)).all()


def test_residual_attention_batch_one_training_and_gradients() -> None:
    m = ResidualAttention(8, depth=3).train()
    x = torch.randn(1, 8, 2, 3, requires_grad=True)  # the hourglass reaches 1x1 maps with one value
    m(x).square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with pytest.raises(ValueError, match="depth"):
        ResidualAttention(8, depth=0)
    with pytest.raises(ValueError, match="upsample_mode"):
        ResidualAttention(8, upsample_mode="bicubic")


@pytest.mark.parametrize("kind", ["highway", "residual_attention"])
def test_block_modules_channels_last_and_bf16(kind: str) -> None:
    if kind == "highway":
        m = Highway(8, zero_init=False).eval()
        run = lambda t: m(t, t.flip(0))
    else:
        m = ResidualAttention(8, depth=2).eval()
        run = m
    x = torch.randn(2, 8, 6, 7)
    with torch.no_grad():
        ref = run(x)
        torch.testing.assert_close(
            run(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-5
        )
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = run(x)
    assert (low.float() - ref).abs().max() / ref.abs().max() < 0.1


# -------------------------------------------------------------------------- tiny ResNets, one step each
CONV_OPTIONS = {
    "sk": {},
    "splat": {},
    "condconv": {},
    "dynamic": {},
    "gsa": {"max_size": 16},
}


def _train_step(model: nn.Module, batch: int) -> None:
    head = nn.Linear(model.num_features, 3)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    # 48 px at batch 1 keeps layer4 at 2x2 (the backbone's own BN needs > 1 value per channel)
    size = 48 if batch == 1 else 32
    x = torch.randn(batch, 3, size, size)
    loss = F.cross_entropy(head(model(x)), torch.arange(batch) % 3)
    loss.backward()
    assert torch.isfinite(loss)
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("arch", [resnet18, resnet50])
@pytest.mark.parametrize("conv", sorted(CONV_OPTIONS))
def test_resnet_with_conv_replacement_trains(conv: str, arch, batch: int) -> None:
    model = arch(base_width=8, conv=conv, conv_kwargs=CONV_OPTIONS[conv])
    replaced = [
        m
        for m in model.modules()
        if type(m).__name__
        in {"SelectiveKernel", "SplitAttn", "CondConv2d", "DynamicConv2d", "GlobalSelfAttention"}
    ]
    assert len(replaced) == (8 if arch is resnet18 else 16)
    for m in model.modules():
        if hasattr(m, "set_temperature"):
            m.set_temperature(10.0)
    _train_step(model, batch)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("arch", [resnet18, resnet50])
def test_resnet_with_highway_and_residual_attention_trains(arch, batch: int) -> None:
    model = arch(
        base_width=8,
        residual="highway",
        stage_module=["none", "residual_attention", "residual_attention", "none"],
        stage_module_kwargs={"depth": [3, 2, 1, 1]},
    )
    gates = [m for m in model.modules() if isinstance(m, Highway)]
    assert len(gates) == (8 if arch is resnet18 else 16)
    # the backbone's own init must not overwrite the carry-biased gate init
    assert all(torch.all(g.gate.weight == 0) and torch.all(g.gate.bias == -2.0) for g in gates)
    assert [m.depth for m in model.stage_modules.values()] == [2, 1]
    _train_step(model, batch)


def test_dynamic_conv_resnet_checkpoint_round_trip() -> None:
    model = resnet18(base_width=8, conv="dynamic").eval()
    for m in model.modules():
        if hasattr(m, "set_temperature"):
            m.set_temperature(1.0)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = resnet18(base_width=8, conv="dynamic").eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
    assert all(float(m.temperature) == 1.0 for m in fresh.modules() if hasattr(m, "set_temperature"))


@pytest.mark.slow
def test_all_modules_trace_with_torch_compile_fullgraph() -> None:
    # dynamo tracing without graph breaks (eager backend: no C++ toolchain needed); slow because of dynamo
    from video_attn.models.attention import create_conv

    x = torch.randn(2, 16, 8, 8)
    modules = {name: create_conv(name, 16, 16, 3, stride=2, **opts) for name, opts in CONV_OPTIONS.items()}
    modules["residual_attention"] = ResidualAttention(16, depth=2)
    for name, m in modules.items():
        compiled = torch.compile(m, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), m(x), msg=name)
    highway = Highway(16, zero_init=False)
    compiled = torch.compile(highway, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, 2 * x), highway(x, 2 * x))
