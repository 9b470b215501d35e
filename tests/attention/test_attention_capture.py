"""AttentionRecorder (video_attn.models.attention_capture): every attention / temporal module's probe is
recorded with the documented kind and shape, and the recorded value is the one the module applied: fed back
into the module's formula it reproduces the module's output.

Tiny models: ResNet-18 at base width 8, 4 segments, 32 x 32 frames, 2 clips (ReID: 32 x 16, GLTR embed 16).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from video_attn.config.loader import build_section
from video_attn.config.schema import Config
from video_attn.models import build_model
from video_attn.models.attention import (
    CBAM,
    CONVS,
    GATES,
    RESIDUALS,
    STAGE_MODULES,
    ChannelAttention,
    SpatialAttention,
    channel_shuffle,
)
from video_attn.models.attention.cond_conv import CondConv2d
from video_attn.models.attention.dynamic_conv import DynamicConv2d
from video_attn.models.attention.eca import ECA
from video_attn.models.attention.global_self_attention import GlobalSelfAttention
from video_attn.models.attention.highway import Highway
from video_attn.models.attention.probe import PROBE_KINDS, AttentionProbe
from video_attn.models.attention.residual_attention import ResidualAttention
from video_attn.models.attention.se import SqueezeExcite
from video_attn.models.attention.selective_kernel import SelectiveKernel
from video_attn.models.attention.shuffle_attention import ShuffleAttention
from video_attn.models.attention.split_attention import SplitAttn
from video_attn.models.attention_capture import AttentionRecorder, probe_key
from video_attn.models.temporal.gltr import TemporalNonLocal
from video_attn.models.temporal.tam import TAM, temporal_adaptive_aggregate

N, T = 2, 4
ATOL = 1e-5

# one tiny TANet per registered name, the module in every stage (SA's default 64 groups need 128 channels)
BACKBONES: dict[str, dict[str, Any]] = {
    **{f"attention={name}": {"attention": name} for name in GATES},
    **{f"conv={name}": {"conv": name} for name in CONVS},
    **{f"residual={name}": {"residual": name} for name in RESIDUALS},
    **{f"stage_module={name}": {"stage_module": name} for name in STAGE_MODULES},
}
BACKBONES["attention=sa"]["attention_kwargs"] = {"groups": "auto"}

# kind and shape of the record of each module type; c: its output channels, hw / hw_in: its output / input
# size
EXPECTED: dict[type[nn.Module], Any] = {
    SqueezeExcite: lambda m, c, hw, hw_in: ("channel", (N, T, c, 1, 1)),
    ECA: lambda m, c, hw, hw_in: ("channel", (N, T, c, 1, 1)),
    ChannelAttention: lambda m, c, hw, hw_in: ("channel", (N, T, c, 1, 1)),
    SpatialAttention: lambda m, c, hw, hw_in: ("spatial", (N, T, 1, *hw)),
    SelectiveKernel: lambda m, c, hw, hw_in: ("branch", (N, T, m.num_paths, c, 1, 1)),
    SplitAttn: lambda m, c, hw, hw_in: ("branch", (N, T, m.radix, c, 1, 1)),
    CondConv2d: lambda m, c, hw, hw_in: ("branch", (N, T, m.num_experts)),
    DynamicConv2d: lambda m, c, hw, hw_in: ("branch", (N, T, m.num_kernels)),
    # GSA's maps are at its input size (a stride pools its output)
    GlobalSelfAttention: lambda m, c, hw, hw_in: ("spatial", (N, T, m.heads * m.dim_key, *hw_in)),
    Highway: lambda m, c, hw, hw_in: ("branch", (N, T, c, *hw)),
    ResidualAttention: lambda m, c, hw, hw_in: ("spatial", (N, T, c, *hw)),
    TAM: None,  # two records, checked in test_tam_records_reproduce_the_aggregation
}


def tiny_config(arch: str = "tanet", **backbone: Any) -> Config:
    if arch == "gltr":
        tree = {
            "device": "cpu",
            "task": "reid",
            "model": {
                "arch": "gltr",
                "num_classes": 5,
                "num_segments": T,
                "dropout": 0.0,
                "backbone": {"depth": 18, "base_width": 8, "last_stride": 1, **backbone},
                "temporal_kwargs": {"embed_dim": 16},
            },
            "data": {"format": "mars", "input_size": [32, 16]},
        }
    else:
        tree = {
            "device": "cpu",
            "task": "action",
            "model": {
                "arch": arch,
                "num_classes": 3,
                "num_segments": T,
                "dropout": 0.0,
                "backbone": {"depth": 18, "base_width": 8, **backbone},
            },
            "data": {"input_size": [32, 32], "scale_size": 32},
        }
    return build_section(Config, tree)


def tiny_model(cfg: Config) -> nn.Module:
    """Random weights with non-trivial BatchNorm statistics and non-zero zero-initialised gates, eval mode."""
    torch.manual_seed(0)
    model = build_model(cfg.model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            if m.weight is not None:
                nn.init.uniform_(m.weight, 0.5, 1.5)  # CBAM's spatial BN and GLTR's W start at 0
        if isinstance(m, ShuffleAttention):
            for p in (m.cweight, m.sweight):
                nn.init.normal_(p)  # start at 0: every gate would be the same sigmoid(1)
        if isinstance(m, Highway):
            nn.init.normal_(m.gate.weight, std=0.1)
    return model.eval()


def capture_io(model: nn.Module, types: tuple[type[nn.Module], ...]) -> dict[str, tuple[tuple, torch.Tensor]]:
    """Run hooks that keep (inputs, output) of every module of ``types``, keyed by path."""
    seen: dict[str, tuple[tuple, torch.Tensor]] = {}
    handles = []
    for path, module in model.named_modules():
        if isinstance(module, types):
            # copies: the block's in-place ReLU rewrites a residual module's output after the hook
            hook = lambda m, args, out, path=path: seen.__setitem__(
                path, (tuple(a.clone() for a in args), out.clone())
            )
            handles.append(module.register_forward_hook(hook))
    return seen, handles


def run(model: nn.Module, clip: torch.Tensor, **recorder_kwargs: Any):
    types = (*EXPECTED, ShuffleAttention, TemporalNonLocal, CBAM)
    seen, handles = capture_io(model, types)
    with torch.no_grad(), AttentionRecorder(model, **recorder_kwargs) as rec:
        model(clip)
    for h in handles:
        h.remove()
    return rec, seen


def frames(value: torch.Tensor) -> torch.Tensor:
    """(N, T, ...) -> (N*T, ...), the layout the module applied it in."""
    return value.flatten(0, 1)


def check_applied(module: nn.Module, args: tuple, out: torch.Tensor, value: torch.Tensor) -> None:
    """The module's output recomputed from its input with the recorded ``value`` in place of its own."""
    x = args[0]
    v = frames(value)
    if isinstance(module, (SqueezeExcite, ECA, ChannelAttention, SpatialAttention)):
        expected = x * v
    elif isinstance(module, ShuffleAttention):
        raise AssertionError("checked by check_shuffle_attention")
    elif isinstance(module, SelectiveKernel):
        u = torch.stack([path(x) for path in module.paths], dim=1)
        expected = (u * v).sum(dim=1)
    elif isinstance(module, SplitAttn):
        u = module.act0(module.bn0(module.conv(x)))
        expected = (u.reshape(u.shape[0], module.radix, -1, *u.shape[-2:]) * v).sum(dim=1)
    elif isinstance(module, (CondConv2d, DynamicConv2d)):
        expected = module.mixed_conv(x, v)
    elif isinstance(module, GlobalSelfAttention):
        b, _, h, w = x.shape
        nh, dk, dv = module.heads, module.dim_key, module.dim_value
        k = module.qkv(x).reshape(b, nh, 2 * dk + dv, h, w)[:, :, dk : 2 * dk]
        expected_k = torch.softmax(k.reshape(b, nh * dk, h * w), dim=-1).reshape(b, nh * dk, h, w)
        torch.testing.assert_close(v, expected_k, atol=ATOL, rtol=0)
        torch.testing.assert_close(v.sum(dim=(2, 3)), torch.ones(b, nh * dk), atol=ATOL, rtol=0)
        return
    elif isinstance(module, Highway):
        branch, identity = args
        expected = identity + v * (branch - identity)
    elif isinstance(module, ResidualAttention):
        pre = module.pre(x)
        expected = module.post((1 + v) * module.trunk(pre))
    else:
        raise AssertionError(f"no check for {type(module).__name__}")
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=1e-5)


def check_shuffle_attention(module: ShuffleAttention, x: torch.Tensor, out: torch.Tensor, records) -> None:
    cgate, sgate = frames(records["channel"].value), frames(records["spatial"].value)
    b, c, h, w = x.shape
    g = module.groups
    x1, x2 = x.reshape(b * g, c // g, h, w).chunk(2, dim=1)
    y1 = x1 * cgate.reshape(b * g, -1, 1, 1)
    y2 = x2 * sgate.reshape(b * g, -1, h, w)
    expected = channel_shuffle(torch.cat([y1, y2], dim=1).reshape(b, c, h, w), 2)
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_module_records_the_value_it_applied(name: str) -> None:
    model = tiny_model(tiny_config(**BACKBONES[name]))
    clip = torch.randn(N, T, 3, 32, 32)
    rec, seen = run(model, clip)
    records = rec.records

    probes = [p for p, m in model.named_modules() if isinstance(m, AttentionProbe)]
    assert list(records) == [probe_key(p) for p in probes] == rec.paths  # every probe, in module order
    checked = 0
    for path, (args, out) in seen.items():
        module = model.get_submodule(path)
        if isinstance(module, (TAM, TemporalNonLocal, CBAM)):
            continue
        if isinstance(module, ShuffleAttention):
            sub = {k[len(path) + 1 :]: r for k, r in records.items() if k.startswith(f"{path}.")}
            assert {k: r.kind for k, r in sub.items()} == {"channel": "channel", "spatial": "spatial"}
            c, hw = args[0].shape[1], args[0].shape[-2:]
            assert sub["channel"].value.shape == (N, T, c // 2, 1, 1)
            assert sub["spatial"].value.shape == (N, T, c // 2, *hw)
            check_shuffle_attention(module, args[0], out, sub)
            checked += 1
            continue
        record = records[path]
        c, hw, hw_in = out.shape[1], tuple(out.shape[-2:]), tuple(args[0].shape[-2:])
        assert (record.kind, tuple(record.value.shape)) == EXPECTED[type(module)](module, c, hw, hw_in), path
        assert record.per_frame and record.module == type(module).__name__
        assert record.value.device.type == "cpu" and not record.value.requires_grad
        check_applied(module, args, out, record.value)
        checked += 1
    assert checked >= 4, f"{name}: only {checked} attention modules checked"  # one per stage at least


def test_cbam_records_both_halves_and_the_product_reproduces_its_output() -> None:
    model = tiny_model(tiny_config(attention="cbam"))
    rec, seen = run(model, torch.randn(N, T, 3, 32, 32))
    records = rec.records
    path = "backbone.layer2.0.attn"
    args, out = seen[path]
    channel, spatial = records[f"{path}.channel"], records[f"{path}.spatial"]
    assert (channel.kind, spatial.kind) == ("channel", "spatial")
    assert spatial.value.shape == (N, T, 1, *out.shape[-2:])
    gated = args[0] * frames(channel.value)  # the spatial gate's (channel-gated) input
    torch.testing.assert_close(out, gated * frames(spatial.value), atol=ATOL, rtol=1e-5)
    # maps differ between frames and positions: a real map, not a constant
    assert spatial.value.std() > 1e-3


def test_tam_records_reproduce_the_aggregation() -> None:
    model = tiny_model(tiny_config())
    rec, seen = run(model, torch.randn(N, T, 3, 32, 32))
    records = rec.records
    tams = [p for p in seen if isinstance(model.get_submodule(p), TAM)]
    assert len(tams) == 8  # every BasicBlock of ResNet-18
    for path in tams:
        (x,), out = seen[path]
        kernel, importance = records[f"{path}.kernel"], records[f"{path}.importance"]
        c, k = x.shape[1], model.get_submodule(path).kernel_size
        assert (kernel.kind, kernel.per_frame) == ("temporal_kernel", False)
        assert kernel.value.shape == (N, c, k)
        assert (importance.kind, tuple(importance.value.shape)) == ("temporal_importance", (N, c, T))
        torch.testing.assert_close(kernel.value.sum(-1), torch.ones(N, c), atol=ATOL, rtol=0)
        x5 = x.view(N, T, *x.shape[1:])
        rebuilt = temporal_adaptive_aggregate(x5, kernel.value, importance.value).flatten(0, 1)
        torch.testing.assert_close(out, rebuilt, atol=ATOL, rtol=1e-5)


def gltr_model(frame_chunk: int = 64) -> nn.Module:
    model = tiny_model(tiny_config("gltr"))
    model.frame_chunk = frame_chunk
    return model


def test_gltr_attention_reproduces_the_temporal_self_attention() -> None:
    model = gltr_model()
    clip = torch.randn(N, 6, 3, 32, 16)  # a tracklet length other than num_segments: T is read from the input
    rec, seen = run(model, clip)
    records = rec.records
    assert [k for k, r in records.items() if not r.per_frame] == ["temporal.tsa.0"]
    record = records["temporal.tsa.0"]
    assert (record.kind, tuple(record.value.shape), record.module) == (
        "temporal_attention",
        (N, 6, 6),
        "TemporalNonLocal",
    )
    torch.testing.assert_close(record.value.sum(-1), torch.ones(N, 6), atol=ATOL, rtol=0)
    (x,), out = seen["temporal.tsa.0"]
    block = model.get_submodule("temporal.tsa.0")
    y = torch.bmm(record.value, block.g(x).transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, block.W(y) + x, atol=ATOL, rtol=1e-5)


def test_chunked_reid_forward_records_the_same_as_one_pass() -> None:
    clip = torch.randn(N, 6, 3, 32, 16)
    whole, _ = run(gltr_model(frame_chunk=64), clip, num_segments=6)
    chunked, _ = run(gltr_model(frame_chunk=5), clip, num_segments=6)  # 12 frames in chunks of 5
    assert list(whole.records) == list(chunked.records)
    for key, record in whole.records.items():
        torch.testing.assert_close(chunked.records[key].value, record.value, atol=ATOL, rtol=1e-5)


def test_filters_hooks_removed_and_state_dict_untouched() -> None:
    model = tiny_model(tiny_config(attention="cbam"))
    assert not [k for k in model.state_dict() if "probe" in k]
    clip = torch.randn(1, T, 3, 32, 32)
    rec, _ = run(model, clip, kinds=["spatial"], include=["backbone.layer3"])
    assert list(rec.records) == ["backbone.layer3.0.attn.spatial", "backbone.layer3.1.attn.spatial"]
    with torch.no_grad():
        model(clip)  # after the with block: nothing more is recorded
    assert rec.records["backbone.layer3.0.attn.spatial"].value.shape[0] == 1
    rec.clear()
    assert rec.records == {}
    with pytest.raises(ValueError, match="unknown attention kinds"):
        AttentionRecorder(model, kinds=["nope"])


def test_per_frame_values_need_the_number_of_frames() -> None:
    backbone = tiny_model(tiny_config(attention="se")).backbone
    with torch.no_grad(), AttentionRecorder(backbone) as rec:
        backbone(torch.randn(N * T, 3, 32, 32))
    with pytest.raises(ValueError, match="num_segments"):
        rec.records  # noqa: B018
    rec.num_segments = T
    assert rec.records["layer1.0.attn"].value.shape == (N, T, 8, 1, 1)


def test_probe_keys_and_kinds() -> None:
    assert probe_key("backbone.layer2.0.attn.spatial.probe") == "backbone.layer2.0.attn.spatial"
    assert probe_key("backbone.layer1.0.temporal.kernel_probe") == "backbone.layer1.0.temporal.kernel"
    assert probe_key("probe") == ""
    assert AttentionProbe("temporal_kernel").per_frame is False and AttentionProbe("spatial").per_frame
    assert set(PROBE_KINDS) >= {"spatial", "channel", "branch", "temporal_attention"}
    with pytest.raises(ValueError, match="unknown probe kind"):
        AttentionProbe("nope")
