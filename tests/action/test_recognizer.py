"""TSN / TSM / TANet recognizers: placement, shapes, classifier init, multi-view averaging."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from video_attn.models import build_model
from video_attn.models.recognizer import Recognizer, average_views
from video_attn.models.temporal.tam import TAM
from video_attn.models.temporal.temporal_shift import TemporalShift


def _count(model: nn.Module, cls: type) -> list[int]:
    return [
        sum(isinstance(b.temporal, cls) or isinstance(b.shift, cls) for b in stage)
        for stage in model.backbone.stages
    ]


def test_tanet_r50_places_tam_in_every_bottleneck(make_model_cfg):
    model = build_model(make_model_cfg("tanet", depth=50, base_width=8, num_segments=8))
    assert _count(model, TAM) == [3, 4, 6, 3]
    for i, stage in enumerate(model.backbone.stages):
        for block in stage:
            # TAM sits on the bottleneck width (after conv1 -> bn1 -> relu)
            assert block.temporal.in_channels == 8 * 2**i == block.conv1.out_channels
            assert block.temporal.num_segments == 8
            assert isinstance(block.shift, nn.Identity)


def test_placement_stages_and_every(make_model_cfg):
    m = build_model(make_model_cfg("tanet", depth=50, stages=[2, 3]))
    assert _count(m, TAM) == [0, 4, 6, 0]
    m = build_model(make_model_cfg("tanet", depth=50, every=2))
    assert _count(m, TAM) == [2, 2, 3, 2]
    m = build_model(make_model_cfg("tsm", depth=50, every=2))
    assert _count(m, TemporalShift) == [2, 2, 3, 2] and _count(m, TAM) == [0, 0, 0, 0]
    m = build_model(make_model_cfg("tsn", depth=18))
    assert _count(m, TAM) == [0, 0, 0, 0] and _count(m, TemporalShift) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="model.temporal_stages"):
        build_model(make_model_cfg("tanet", stages=[0, 5]))
    with pytest.raises(ValueError, match="model.temporal_every"):
        build_model(make_model_cfg("tsm", every=0))


def test_temporal_kwargs_reach_every_module(make_model_cfg):
    m = build_model(make_model_cfg("tanet", depth=18, kernel_size=5, alpha=1, beta=2))
    tams = [b.temporal for s in m.backbone.stages for b in s]
    assert len(tams) == 8
    for tam in tams:
        assert tam.kernel_size == 5 and tam.L[0].kernel_size == (5,) and tam.G[3].out_features == 5
        assert tam.G[0].out_features == 1 * 4 and tam.L[0].out_channels == tam.in_channels // 2
    m = build_model(make_model_cfg("tsm", depth=18, shift_div=4))
    assert {b.shift.shift_div for s in m.backbone.stages for b in s} == {4}
    # absent options keep the official defaults (TAM alpha 2, beta 4, K 3; TSM 1/8)
    tam = build_model(make_model_cfg("tanet", depth=18)).backbone.layer1[0].temporal
    assert (tam.G[0].out_features, tam.L[0].out_channels, tam.kernel_size) == (2 * 4, 8 // 4, 3)
    assert build_model(make_model_cfg("tsm", depth=18)).backbone.layer1[0].shift.shift_div == 8


def test_bad_arch_and_temporal_kwargs_are_one_line_errors(make_model_cfg):
    with pytest.raises(
        ValueError,
        match=r"^model.temporal_kwargs: unknown key\(s\) shift_div for model.arch=tanet \(TAM\); "
        r"valid keys: alpha, beta, kernel_size, aggregation$",
    ):
        build_model(make_model_cfg("tanet", shift_div=4))
    with pytest.raises(ValueError, match=r"valid keys: shift_div$"):
        build_model(make_model_cfg("tsm", kernel_size=5))
    with pytest.raises(ValueError, match="model.arch=tsn has no temporal module"):
        build_model(make_model_cfg("tsn", kernel_size=5))
    with pytest.raises(ValueError, match=r"model.temporal_kwargs for model.arch=tanet \(TAM\): .*odd"):
        build_model(make_model_cfg("tanet", kernel_size=4))
    with pytest.raises(ValueError, match=r"model.arch='tam' is not a registered model; valid: action tsn"):
        build_model(make_model_cfg("tam"))


def test_arch_lists_come_from_the_registries():
    from video_attn.models import ACTION_ARCHS, REID_ARCHS
    from video_attn.models.temporal.registry import ACTION_TEMPORAL_MODULES, REID_TEMPORAL_MODULES

    assert ACTION_ARCHS == ("tsn", "tsm", "tanet") == tuple(ACTION_TEMPORAL_MODULES)
    assert REID_ARCHS == tuple(REID_TEMPORAL_MODULES)
    assert REID_ARCHS == ("gltr", "temporal_pool", "temporal_attention", "gru")
    assert ACTION_TEMPORAL_MODULES["tanet"] is TAM and ACTION_TEMPORAL_MODULES["tsm"] is TemporalShift


def test_tanet_r18_block_width_and_forward(make_model_cfg):
    model = build_model(make_model_cfg("tanet", depth=18, base_width=8, num_segments=4))
    assert _count(model, TAM) == [2, 2, 2, 2]
    assert [s[0].temporal.in_channels for s in model.backbone.stages] == [8, 16, 32, 64]
    out = model(torch.randn(2, 4, 3, 32, 32))
    assert out.shape == (2, 4)
    with pytest.raises(ValueError, match="num_segments=4"):
        model(torch.randn(1, 8, 3, 32, 32))


def test_tanet_with_se_gate(make_model_cfg):
    cfg = make_model_cfg("tanet", depth=50, base_width=16, num_segments=2)
    cfg.backbone.attention = "se"
    model = build_model(cfg).eval()
    blocks = [b for s in model.backbone.stages for b in s]
    assert all(isinstance(b.temporal, TAM) and not isinstance(b.attn, nn.Identity) for b in blocks)
    assert model(torch.randn(1, 2, 3, 32, 32)).shape == (1, 4)


def test_classifier_init_and_forward_is_frame_average(make_model_cfg):
    torch.manual_seed(0)
    model = build_model(make_model_cfg("tsn", num_classes=400)).eval()
    assert isinstance(model, Recognizer) and isinstance(model.classifier, nn.Linear)
    w = model.classifier.weight
    assert w.shape == (400, 64)
    assert abs(w.std().item() - 0.001) < 5e-5 and abs(w.mean().item()) < 5e-5
    assert model.classifier.bias.eq(0).all()
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        frame_logits = model.classifier(model.backbone(x.flatten(0, 1))).view(2, 3, -1)
        torch.testing.assert_close(model(x), frame_logits.mean(1))
        # TSN ignores frame order; TANet does not
        torch.testing.assert_close(model(x), model(x.flip(1)))


def test_tanet_depends_on_frame_order(make_model_cfg):
    torch.manual_seed(0)
    model = build_model(make_model_cfg("tanet", num_segments=4)).eval()
    nn.init.normal_(model.classifier.weight, 0, 1.0)
    x = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x.flip(1)))


def test_average_views_modes_and_forward_views(make_model_cfg):
    scores = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]])
    torch.testing.assert_close(average_views(scores, "logits"), torch.tensor([[0.5, 1.5]]))
    probs = (scores.softmax(-1)).mean(1)
    torch.testing.assert_close(average_views(scores, "softmax"), probs)
    with pytest.raises(ValueError, match="average mode"):
        average_views(scores, "max")
    model = build_model(make_model_cfg("tsm", num_segments=2)).eval()
    clips = torch.randn(2, 3, 2, 3, 32, 32)
    with torch.no_grad():
        per_view = torch.stack([model(clips[:, v]) for v in range(3)], 1)
        torch.testing.assert_close(model.forward_views(clips, "softmax"), per_view.softmax(-1).mean(1))
        torch.testing.assert_close(model.forward_views(clips, "logits"), per_view.mean(1))


def test_tanet_trains_one_step(make_model_cfg):
    model = build_model(make_model_cfg("tanet", num_segments=4)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(2, 4, 3, 32, 32), torch.tensor([0, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    tam = model.backbone.layer1[0].temporal
    assert tam.G[0].weight.grad is not None and tam.L[0].weight.grad.abs().sum() > 0
    opt.step()
