"""Attention ResNet backbone: parameter counts, torchvision compatibility, slots, options."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn

from video_attn.config.schema import BackboneConfig
from video_attn.models.attention import CONVS, ECA, RESIDUALS, STAGE_MODULES, SqueezeExcite
from video_attn.models.backbones import (
    BasicBlock,
    Bottleneck,
    ResNet,
    build_backbone,
    load_pretrained,
    resnet18,
    resnet50,
)

PLAIN_R50 = 23_508_032  # torchvision resnet50 (25,557,032) minus fc (2048 * 1000 + 1000)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------ parameter counts
def test_plain_resnet50_matches_torchvision_layout() -> None:
    with torch.device("meta"):
        ours = resnet50()
        tv = torchvision.models.resnet50()
    assert _count(ours) == PLAIN_R50 == _count(tv) - _count(tv.fc)
    tv_keys = {k for k in tv.state_dict() if not k.startswith("fc.")}
    assert set(ours.state_dict()) == tv_keys
    assert ours.num_features == 2048 and len(ours.stages) == 4


@pytest.mark.parametrize(
    ("attention", "kwargs", "delta"),
    [
        ("se", {}, 2_530_992),
        ("cbam", {}, 2_532_592),
        ("eca", {"k_size": [3, 5, 5, 7]}, 80),
        ("eca", {}, 86),
        ("sa", {}, 708),
    ],
    ids=["se", "cbam", "eca_released", "eca_adaptive", "sa"],
)
def test_resnet50_attention_parameter_deltas(attention: str, kwargs: dict, delta: int) -> None:
    with torch.device("meta"):
        model = resnet50(attention=attention, attention_kwargs=kwargs)
    assert _count(model) - PLAIN_R50 == delta


def test_eca_per_stage_kernel_sizes() -> None:
    with torch.device("meta"):
        released = resnet50(attention="eca", attention_kwargs={"k_size": [3, 5, 5, 7]})
        adaptive = resnet50(attention="eca")
    assert [stage[0].attn.k_size for stage in released.stages] == [3, 5, 5, 7]
    assert [stage[0].attn.k_size for stage in adaptive.stages] == [5, 5, 5, 7]


def test_per_stage_attention_names() -> None:
    model = resnet18(base_width=8, attention=["none", "se", "se", "se"])
    assert all(isinstance(b.attn, nn.Identity) for b in model.layer1)
    for stage in model.stages[1:]:
        assert all(isinstance(b.attn, SqueezeExcite) for b in stage)
    with torch.device("meta"):
        mixed = resnet50(attention=["none", "se", "se", "se"])
    assert _count(mixed) - PLAIN_R50 == 2_530_992 - 3 * (2 * 256 * 16 + 16 + 256)
    with pytest.raises(ValueError, match="attention must be one name or a list of 4 names"):
        resnet18(base_width=8, attention=["se", "se"])


def test_base_width_scales_every_stage() -> None:
    r18 = resnet18(base_width=8)
    r50 = resnet50(base_width=8)
    assert r18.num_features == 64 and r50.num_features == 256
    assert [s[0].conv1.out_channels for s in r50.stages] == [8, 16, 32, 64]


# ----------------------------------------------------------------------- torchvision weights
def test_plain_resnet18_trains_like_torchvision() -> None:
    """Same weights, same batch: features and every gradient equal torchvision's (train mode, so BN uses
    batch statistics and the in-place residual add runs under autograd as in torchvision)."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().train()
    ours = resnet18().train()
    ours.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(2, 3, 32, 32)
    tv_feats = torch.flatten(
        tv.avgpool(tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))), 1
    )
    feats = ours(x)
    torch.testing.assert_close(feats, tv_feats)
    g = torch.randn_like(feats)
    feats.backward(g)
    tv_feats.backward(g)
    tv_params = dict(tv.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, tv_params[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_torchvision_resnet50_state_dict_loads(tmp_path, caplog) -> None:
    tv = torchvision.models.resnet50().eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrongly mapped buffer shows in the features
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    path = tmp_path / "tv_r50.pth"
    torch.save(tv.state_dict(), path)

    attn_model = resnet50(attention="se")
    before = {k: v.clone() for k, v in attn_model.state_dict().items() if ".attn." in k}
    with caplog.at_level(logging.INFO, logger="video_attn.models.backbones.resnet"):
        missing, unexpected = load_pretrained(attn_model, str(path))
    assert missing and set(missing) == set(before)  # only the attention keys are missing
    assert sorted(unexpected) == ["fc.bias", "fc.weight"]
    assert "missing keys" in caplog.text and "unexpected keys" in caplog.text
    state = attn_model.state_dict()
    for k, v in before.items():  # new attention parameters keep their init
        torch.testing.assert_close(state[k], v)
    torch.testing.assert_close(state["layer3.2.conv2.weight"], tv.layer3[2].conv2.weight)

    with torch.device("meta"):  # every parameter comes from the file: skip the init
        plain = resnet50()
    plain = plain.to_empty(device="cpu").eval()
    missing, unexpected = load_pretrained(plain, str(path))
    assert missing == [] and sorted(unexpected) == ["fc.bias", "fc.weight"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tv.fc = nn.Identity()
        torch.testing.assert_close(plain(x), tv(x), atol=1e-5, rtol=1e-5)


def test_load_pretrained_wrapped_prefixed_and_errors(tmp_path) -> None:
    src = resnet18(base_width=8)
    with torch.no_grad():
        src.layer2[0].bn1.running_mean.fill_(0.25)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    dst = resnet18(base_width=8)
    assert load_pretrained(dst, str(path)) == ([], [])
    assert (dst.layer2[0].bn1.running_mean == 0.25).all()

    torch.save({"model": resnet18(base_width=16).state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"conv1.weight: file \(16, 3, 7, 7\) vs model \(8, 3, 7, 7\)"):
        load_pretrained(dst, str(tmp_path / "wide.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pretrained(dst, str(tmp_path / "missing.pt"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt: expected a state_dict"):
        load_pretrained(dst, str(tmp_path / "list.pt"))


def test_build_backbone_from_config(tmp_path) -> None:
    path = tmp_path / "w.pt"
    torch.save(resnet50(base_width=8).state_dict(), path)
    cfg = BackboneConfig(
        depth=50,
        base_width=8,
        attention="eca",
        attention_kwargs={"k_size": [3, 5, 5, 7]},
        last_stride=1,
        pretrained=str(path),
    )
    model = build_backbone(cfg)
    assert isinstance(model.layer4[0].attn, ECA) and model.layer4[0].attn.k_size == 7
    torch.testing.assert_close(model.conv1.weight, torch.load(path, weights_only=True)["conv1.weight"])
    with pytest.raises(ValueError, match="model.backbone: unknown attention 'bogus'"):
        build_backbone(BackboneConfig(depth=18, base_width=8, attention="bogus"))
    staged = build_backbone(
        BackboneConfig(
            depth=18,
            base_width=8,
            stage_module=["none", "none", "residual_attention", "residual_attention"],
            stage_module_kwargs={"depth": [3, 2, 2, 1]},
        )
    )
    assert [(k, m.depth) for k, m in staged.stage_modules.items()] == [("layer3", 2), ("layer4", 1)]
    with pytest.raises(ValueError, match="model.backbone: stage_module must be one name or a list of 4"):
        build_backbone(BackboneConfig(depth=18, base_width=8, stage_module=["residual_attention"]))


# ------------------------------------------------------------------------------ forward options
@pytest.mark.parametrize("depth_fn", [resnet18, resnet50])
def test_output_shapes_and_last_stride(depth_fn) -> None:
    x = torch.randn(2, 3, 64, 48)
    m2 = depth_fn(base_width=8).eval()
    m1 = depth_fn(base_width=8, last_stride=1).eval()
    assert m2.forward_features(x).shape == (2, m2.num_features, 2, 2)
    assert m1.forward_features(x).shape == (2, m1.num_features, 4, 3)
    out = m1(x)
    assert out.shape == (2, m1.num_features)
    torch.testing.assert_close(out, m1.forward_features(x).mean((2, 3)))
    with pytest.raises(ValueError, match=r"expects \(N\*T, 3, H, W\)"):
        m1(torch.randn(2, 4, 3, 32, 32))


def test_frozen_bn_survives_train() -> None:
    model = resnet18(base_width=8, attention="cbam", frozen_bn=True)
    model.train()
    own = [model.bn1, model.layer1[0].bn1, model.layer2[0].bn2, model.layer2[0].downsample[1]]
    assert all(not m.training and not m.weight.requires_grad for m in own)
    gate_bn = model.layer1[0].attn.spatial.bn
    assert gate_bn.training and gate_bn.weight.requires_grad  # new attention BN still learns
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k and ".attn." not in k}
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    for k, v in stats.items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert model.conv1.weight.grad is not None and model.bn1.weight.grad is None


# CBAM: its own BN (statistics restored after recomputation); SA: GroupNorm
@pytest.mark.parametrize("attention", ["se", "cbam", "sa"])
def test_grad_checkpointing_same_outputs_grads_and_stats(attention: str) -> None:
    kwargs = {"attention": attention, "attention_kwargs": {"groups": "auto"} if attention == "sa" else {}}
    ref = resnet18(base_width=8, **kwargs).train()
    ckpt = resnet18(base_width=8, grad_checkpointing=True, **kwargs).train()
    ckpt.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 32, 32)
    out_ref, out_ckpt = ref(x), ckpt(x)
    torch.testing.assert_close(out_ckpt, out_ref)
    out_ref.square().sum().backward()
    out_ckpt.square().sum().backward()
    grads = dict(ckpt.named_parameters())
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    ckpt_state = ckpt.state_dict()
    for k, v in ref.state_dict().items():  # recomputation must not update BN statistics twice
        torch.testing.assert_close(ckpt_state[k], v, msg=k)


@pytest.mark.parametrize("attention", ["se", "eca", "cbam", "sa"])
def test_batch_size_one_training(attention: str) -> None:
    kwargs = {"groups": "auto"} if attention == "sa" else {}
    model = resnet50(base_width=8, attention=attention, attention_kwargs=kwargs).train()
    # 64 px: layer4 is 2x2 (a 1x1 map at batch 1 is undefined for the backbone's own BN, as in torchvision)
    out = model(torch.randn(1, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (1, 256) and torch.isfinite(model.conv1.weight.grad).all()


@pytest.mark.parametrize("attention", ["se", "eca", "cbam", "sa"])
def test_channels_last_matches_contiguous(attention: str) -> None:
    kwargs = {"groups": "auto"} if attention == "sa" else {}
    model = resnet50(base_width=8, attention=attention, attention_kwargs=kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(
        model(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-5, rtol=1e-4
    )


# --------------------------------------------------------------------------- slots and plug-ins
class _Recorder(nn.Module):
    def __init__(self, log: list, tag: str) -> None:
        super().__init__()
        self.log, self.tag = log, tag

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append((self.tag, x.shape[1]))
        return x


@pytest.mark.parametrize("block_fn", [resnet18, resnet50])
def test_shift_and_temporal_slots(block_fn) -> None:
    model = block_fn(base_width=8).eval()
    blk = model.layer2[0]
    assert isinstance(blk.shift, nn.Identity) and isinstance(blk.temporal, nn.Identity)
    log: list = []
    blk.shift, blk.temporal = _Recorder(log, "shift"), _Recorder(log, "temporal")
    model(torch.randn(1, 3, 32, 32))
    in_ch = model.layer1[-1].bn2.num_features if block_fn is resnet18 else model.layer1[-1].bn3.num_features
    assert log == [("shift", in_ch), ("temporal", 16)]  # temporal sees the branch width (planes)


class _NormActConv(nn.Module):
    """Test conv replacement that brings its own BN + ReLU (like SK / split attention)."""

    includes_norm_act = True

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1, tag=0):
        super().__init__()
        self.tag = tag
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))) - 1.0  # the -1 shows whether the block adds a ReLU after


def test_conv_replacement_position_and_norm_act(monkeypatch) -> None:
    monkeypatch.setitem(CONVS, "test_na", _NormActConv)
    r50 = resnet50(
        base_width=8, conv=["none", "test_na", "test_na", "test_na"], conv_kwargs={"tag": [0, 1, 2, 3]}
    )
    assert type(r50.layer1[0].conv2) is nn.Conv2d and isinstance(r50.layer1[0].bn2, nn.BatchNorm2d)
    blk = r50.layer2[0]
    assert isinstance(blk.conv2, _NormActConv) and blk.conv2.tag == 1 and isinstance(blk.bn2, nn.Identity)
    assert blk.conv2.conv.stride == (2, 2) and r50.layer4[0].conv2.tag == 3
    log: list = []
    blk.conv3.register_forward_pre_hook(lambda m, a: log.append(a[0].min().item()))
    r50.eval()(torch.randn(1, 3, 32, 32))
    assert log[0] == pytest.approx(-1.0)  # no ReLU was applied after the replacement
    r18 = resnet18(base_width=8, conv="test_na")
    assert isinstance(r18.layer1[0].conv1, _NormActConv) and isinstance(r18.layer1[0].bn1, nn.Identity)
    assert type(r18.layer1[0].conv2) is nn.Conv2d
    assert r18.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 64)


class _HalfResidual(nn.Module):
    def __init__(self, channels: int, weight: float = 0.5) -> None:
        super().__init__()
        self.channels, self.weight = channels, weight

    def forward(self, branch: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return self.weight * branch + identity


class _Scale(nn.Module):
    def __init__(self, channels: int, scale: float = 2.0) -> None:
        super().__init__()
        self.channels = channels
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_residual_and_stage_modules(monkeypatch) -> None:
    monkeypatch.setitem(RESIDUALS, "half", _HalfResidual)
    monkeypatch.setitem(STAGE_MODULES, "scale", _Scale)
    model = resnet18(
        base_width=8,
        residual="half",
        residual_kwargs={"weight": [0.1, 0.2, 0.3, 0.4]},
        stage_module=["none", "scale", "scale", "none"],
        stage_module_kwargs={"scale": [5.0, 2.0, 2.0, 5.0]},
    ).eval()
    assert model.layer3[1].residual.weight == 0.3 and model.layer3[1].residual.channels == 32
    assert set(model.stage_modules) == {"layer2", "layer3"} and model.stage_modules["layer3"].channels == 32
    assert {k for k in model.state_dict() if k.startswith("stage_modules.")} == {
        "stage_modules.layer2.scale",
        "stage_modules.layer3.scale",
    }
    blk, x = model.layer1[0], torch.randn(1, 8, 8, 8)
    branch = blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(x)))))
    torch.testing.assert_close(blk(x), torch.relu(0.1 * branch + x))
    feats = {}
    model.layer3.register_forward_hook(lambda m, a, o: feats.setdefault("l3", o))
    model.layer4.register_forward_pre_hook(lambda m, a: feats.setdefault("l4_in", a[0]))
    model(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(feats["l4_in"], 2.0 * feats["l3"])
    assert len(resnet18(base_width=8, stage_module="scale").stage_modules) == 4  # one name: every stage
    assert len(resnet18(base_width=8).stage_modules) == 0
    with pytest.raises(ValueError, match="stage_module must be one name or a list of 4 names"):
        resnet18(base_width=8, stage_module=["scale", "none"])
    with pytest.raises(ValueError, match="unknown stage module 'bogus'; valid: none"):
        resnet18(base_width=8, stage_module="bogus")


def test_block_types_and_attention_position() -> None:
    model = resnet50(base_width=8, attention="se").eval()
    blk = model.layer1[0]
    assert isinstance(blk, Bottleneck) and isinstance(resnet18(base_width=8).layer1[0], BasicBlock)
    assert blk.attn.fc1.in_channels == 32  # gate on the expanded output (planes * 4)
    x = torch.randn(1, 8, 8, 8)
    out = blk.relu(blk.bn1(blk.conv1(x)))
    out = blk.relu(blk.bn2(blk.conv2(out)))
    out = blk.attn(blk.bn3(blk.conv3(out)))
    torch.testing.assert_close(blk(x), torch.relu(out + blk.downsample(x)))
    assert isinstance(model, ResNet) and not hasattr(model, "fc")


@pytest.mark.parametrize("attention", ["se", "eca", "cbam", "sa"])
def test_block_with_gate_is_relu_of_gate_plus_identity(attention: str) -> None:
    """Output and every gradient of a block equal ``relu(gate(bn3(conv3(...))) + identity)`` written out, and
    a hook on the gate sees the gate's own output (the residual add does not write into it)."""
    kwargs = {"groups": "auto"} if attention == "sa" else {}
    model = resnet50(base_width=8, attention=attention, attention_kwargs=kwargs).double().train()
    with torch.no_grad():
        for p in model.parameters():  # CBAM's zero-init BN would hide a wrong spatial gate
            p.add_(torch.randn_like(p) * 0.05)
    blk = model.layer2[1]
    x = torch.randn(2, 64, 4, 4, dtype=torch.float64)

    def written_out(t: torch.Tensor) -> torch.Tensor:
        out = blk.relu(blk.bn1(blk.conv1(t)))
        out = blk.relu(blk.bn2(blk.conv2(out)))
        return torch.relu(blk.attn(blk.bn3(blk.conv3(out))) + t)

    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    seen = []
    blk.attn.register_forward_hook(lambda m, a, o: seen.append((a[0], o)))
    out = blk(xa)
    branch, gated = seen[0]
    torch.testing.assert_close(gated, blk.attn(branch))
    want = written_out(xb)
    torch.testing.assert_close(out, want)
    g, params = torch.randn_like(out), list(blk.parameters())
    for got, expected in zip(
        torch.autograd.grad(out, [xa, *params], g), torch.autograd.grad(want, [xb, *params], g), strict=True
    ):
        torch.testing.assert_close(got, expected)
