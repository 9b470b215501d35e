"""ReID models: builders, train / eval outputs, chunked embedding, heads, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from video_attn.config import load_config
from video_attn.models import build_model
from video_attn.models.heads.bnneck import BNNeck
from video_attn.models.heads.gltr_head import GLTRHead
from video_attn.models.reid_model import ReIDModel
from video_attn.models.temporal.gltr import GLTR

REPO = Path(__file__).resolve().parents[2]
ARCHS = [("gltr", "gltr"), ("temporal_pool", "linear"), ("temporal_attention", "bnneck"), ("gru", "linear")]


@pytest.fixture
def tiny_cfg(reid_helpers):
    return reid_helpers.tiny_reid_config()


@pytest.mark.parametrize("arch,head", ARCHS)
def test_train_and_eval_outputs(reid_helpers, arch: str, head: str) -> None:
    torch.manual_seed(0)
    model = build_model(reid_helpers.tiny_reid_config(arch=arch, head=head).model)
    assert isinstance(model, ReIDModel)
    x = torch.randn(2, 3, 3, 32, 16)
    model.train()
    logits, feat = model(x)
    assert logits.shape == (2, 5) and feat.shape == (2, model.feat_dim)
    (logits.sum() + feat.sum()).backward()
    assert isinstance(model.classifier, nn.Linear) and model.classifier.weight.grad is not None
    model.eval()
    with torch.no_grad():
        emb = model(x)
    assert emb.shape == (2, model.feat_dim)
    expected_dim = {"gltr": 4 * 16, "temporal_pool": 64, "temporal_attention": 64, "gru": 16}[arch]
    assert model.feat_dim == expected_dim


@pytest.mark.parametrize("arch", ["gltr", "temporal_attention"])
def test_chunked_eval_equals_one_pass(reid_helpers, arch: str) -> None:
    torch.manual_seed(1)
    model = build_model(reid_helpers.tiny_reid_config(arch=arch).model).eval()
    x = torch.randn(2, 7, 3, 32, 16)
    with torch.no_grad():
        model.frame_chunk = 1000
        one = model(x)
        model.frame_chunk = 3  # 14 frames in chunks of 3, across the tracklet boundary
        chunked = model(x)
    torch.testing.assert_close(chunked, one, rtol=1e-5, atol=1e-5)


def test_gltr_model_parameter_count(tiny_cfg) -> None:
    from video_attn.models.backbones.resnet import build_backbone

    model = build_model(tiny_cfg.model)
    backbone = sum(p.numel() for p in build_backbone(tiny_cfg.model.backbone).parameters())
    gltr = sum(p.numel() for p in GLTR(64, 16).parameters())
    head = 2 * 64 + 64 * 5 + 5  # BN affine + Linear
    assert sum(p.numel() for p in model.parameters()) == backbone + gltr + head


def test_gltr_head_structure_and_test_feature() -> None:
    torch.manual_seed(2)
    head = GLTRHead(8, 3, dropout=0.5)
    assert (
        isinstance(head.bn, nn.BatchNorm1d) and isinstance(head.dropout, nn.Dropout) and head.dropout.p == 0.5
    )
    f = torch.randn(4, 8)
    head.eval()
    assert torch.equal(head(f), f)  # test feature = GLTR output before the head
    head.train()
    head.dropout.p = 0.0
    out, feat = head(f)
    torch.testing.assert_close(feat, f)
    bn = (f - f.mean(0)) / torch.sqrt(f.var(0, unbiased=False) + head.bn.eps) * head.bn.weight + head.bn.bias
    torch.testing.assert_close(out, head.classifier(torch.relu(bn)), rtol=1e-4, atol=1e-5)
    # a batch of one in training uses the running statistics instead of failing
    head.train()
    assert head(f[:1])[0].shape == (1, 3)
    linear = GLTRHead(8, 3, dropout=0.0, bn=False).train()
    torch.testing.assert_close(linear(f)[0], linear.classifier(f))


def test_bnneck_strong_baseline_facts() -> None:
    torch.manual_seed(3)
    neck = BNNeck(16, 10)
    assert not neck.bottleneck.bias.requires_grad and torch.all(neck.bottleneck.bias == 0)
    assert torch.all(neck.bottleneck.weight == 1)
    assert neck.classifier.bias is None and abs(neck.classifier.weight.std().item() - 0.001) < 0.0003
    f = torch.randn(6, 16)
    logits, feat = neck.train()(f)
    assert torch.equal(feat, f)  # triplet sees the pre-BN feature
    bn = (f - f.mean(0)) / torch.sqrt(f.var(0, unbiased=False) + neck.bottleneck.eps)
    torch.testing.assert_close(logits, bn @ neck.classifier.weight.t(), rtol=1e-4, atol=1e-5)
    neck.eval()
    torch.testing.assert_close(neck(f), neck.bottleneck(f))
    assert torch.equal(BNNeck(16, 10, test_feature="before").eval()(f), f)


def test_temporal_kwargs_reach_the_module(reid_helpers) -> None:
    kwargs = {"embed_dim": 8, "dilations": [1, 2], "num_tsa_blocks": 2}
    cfg = reid_helpers.tiny_reid_config(temporal_kwargs=kwargs)
    gltr = build_model(cfg.model).temporal
    assert (gltr.embed_dim, gltr.dilations, len(gltr.tsa), gltr.out_channels) == (8, (1, 2), 2, 24)
    cfg = reid_helpers.tiny_reid_config(arch="gru", temporal_kwargs={"cell": "lstm", "hidden_dim": 12})
    rnn = build_model(cfg.model).temporal.rnn
    assert isinstance(rnn, nn.LSTM) and rnn.hidden_size == 12
    cfg = reid_helpers.tiny_reid_config(
        arch="temporal_attention", temporal_kwargs={"spatial_kernel": [2, 1], "normalize": "sigmoid"}
    )
    assert build_model(cfg.model).temporal.normalize == "sigmoid"
    # absent options keep the official defaults: GLTR 128-d embedding, dilations 1, 2, 3, one TSA block
    gltr = build_model(reid_helpers.tiny_reid_config(temporal_kwargs={}).model).temporal
    assert (gltr.embed_dim, gltr.dilations, len(gltr.tsa)) == (128, (1, 2, 3), 1)


def test_bad_arch_and_temporal_kwargs_are_one_line_errors(reid_helpers) -> None:
    cfg = reid_helpers.tiny_reid_config(temporal_kwargs={"embed_dim": 16, "rnn_hidden": 16})
    with pytest.raises(
        ValueError,
        match=r"^model.temporal_kwargs: unknown key\(s\) rnn_hidden for model.arch=gltr \(GLTR\); "
        r"valid keys: embed_dim, dilations, num_tsa_blocks$",
    ):
        build_model(cfg.model)
    cfg = reid_helpers.tiny_reid_config(arch="temporal_pool", temporal_kwargs={"embed_dim": 16})
    with pytest.raises(ValueError, match=r"\(TemporalAvgPool\); valid keys: \(none\)$"):
        build_model(cfg.model)
    cfg = reid_helpers.tiny_reid_config(arch="gru", temporal_kwargs={"cell": "rnn"})
    with pytest.raises(ValueError, match=r"temporal_kwargs for model.arch=gru \(RecurrentPool\): .*lstm"):
        build_model(cfg.model)
    cfg = reid_helpers.tiny_reid_config(arch="tsm_reid", temporal_kwargs={})
    with pytest.raises(ValueError, match="model.arch='tsm_reid' is not a registered model; valid: .* gltr"):
        build_model(cfg.model)


def test_bad_inputs_are_clear(tiny_cfg) -> None:
    model = build_model(tiny_cfg.model)
    with pytest.raises(ValueError, match=r"\(N, T, 3, H, W\)"):
        model(torch.randn(2, 3, 32, 16))
    tiny_cfg.model.num_classes = 0
    with pytest.raises(ValueError, match="num_classes"):
        build_model(tiny_cfg.model)


def test_reid_configs_load() -> None:
    paths = sorted((REPO / "configs" / "reid").glob("*.yaml")) + [
        REPO / "configs" / "synthetic" / "gltr_r18.yaml"
    ]
    assert len(paths) >= 8
    for path in paths:
        cfg = load_config(path)
        assert cfg.task == "reid" and cfg.model.arch in ("gltr", "temporal_pool", "temporal_attention", "gru")
    official = load_config(REPO / "configs" / "reid" / "gltr_r50_mars.yaml")
    assert official.eval.protocol == "mars_official" and official.eval.test_mode == "all"
    assert official.model.backbone.last_stride == 1 and official.model.num_segments == 16
    assert (
        official.train.lr == 0.01 and official.train.weight_decay == 0.0005 and official.train.epochs == 501
    )
    assert official.train.batch_size == 10 and official.train.loss.triplet_weight == 0
    strong = load_config(REPO / "configs" / "reid" / "gltr_r50_mars_strong.yaml")
    assert strong.model.head == "bnneck" and strong.train.num_instances == 4 and strong.train.amp
    assert strong.train.loss.label_smoothing == 0.1 and strong.train.loss.triplet_margin == 0.3


def test_synthetic_config_builds_small_model() -> None:
    # the config leaves model.num_classes to training (the synthetic set's 16 identities)
    cfg = load_config(REPO / "configs" / "synthetic" / "gltr_r18.yaml", ["model.num_classes=16"])
    model = build_model(cfg.model)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 3, *cfg.data.input_size)).shape == (
            1,
            4 * cfg.model.temporal_kwargs["embed_dim"],
        )
