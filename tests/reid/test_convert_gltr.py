"""Import of official GLTR checkpoints: a reference module in the official layout (ljn114514/GLTR: backbone
keys at top level, ``feat`` embedding, ``feat1..3`` DTP convs as Conv2d(1, E, (3, E)), ``Nonlocal_block0``,
``feat_bn``, ``classifier``) must give the same embedding and logits as the converted model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from video_attn.models import build_model
from video_attn.models.backbones.resnet import build_backbone
from video_attn.models.convert.gltr import convert_official_gltr


class OfficialNonLocal(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.g = nn.Conv1d(c, c // 2, 1)
        self.theta = nn.Conv1d(c, c // 2, 1)
        self.phi = nn.Conv1d(c, c // 2, 1)
        self.W = nn.Sequential(nn.Conv1d(c // 2, c, 1), nn.BatchNorm1d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g_x = self.g(x).permute(0, 2, 1)
        f = torch.matmul(self.theta(x).permute(0, 2, 1), self.phi(x)).softmax(dim=-1)
        y = torch.matmul(f, g_x).permute(0, 2, 1)
        return self.W(y) + x


class OfficialGLTR(nn.Module):
    """The official layout: torchvision-named backbone at top level; feat1..3 are Conv2d(1, E, (3, E))."""

    def __init__(self, backbone: nn.Module, num_classes: int, embed: int) -> None:
        super().__init__()
        self._backbone = [backbone]  # not registered: its modules are re-registered under official names
        for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(backbone, name))
        self.fc = nn.Linear(backbone.num_features, 7)  # the ImageNet classifier, unused
        self.feat = nn.Linear(backbone.num_features, embed)
        for i, d in enumerate((1, 2, 3), start=1):
            setattr(
                self, f"feat{i}", nn.Conv2d(1, embed, (3, embed), padding=(d, 0), dilation=(d, 1), bias=False)
            )
        self.Nonlocal_block0 = OfficialNonLocal(4 * embed)
        self.feat_bn = nn.BatchNorm1d(4 * embed)
        self.classifier = nn.Linear(4 * embed, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = x.shape[:2]
        maps = self._backbone[0].forward_features(x.flatten(0, 1))
        f = self.feat(maps.mean((2, 3)).view(b, t, -1))  # (B, T, E)
        img = f.unsqueeze(1)  # (B, 1, T, E)
        pyramid = [f.transpose(1, 2)] + [getattr(self, f"feat{i}")(img).squeeze(3) for i in (1, 2, 3)]
        z = self.Nonlocal_block0(torch.cat(pyramid, 1)).mean(2)
        return z, self.classifier(torch.relu(self.feat_bn(z)))


@pytest.fixture
def official_and_cfg(reid_helpers):
    torch.manual_seed(0)
    cfg = reid_helpers.tiny_reid_config()
    backbone = build_backbone(cfg.model.backbone)
    official = OfficialGLTR(backbone, cfg.model.num_classes, cfg.model.temporal_kwargs["embed_dim"])
    with torch.no_grad():  # non-trivial values everywhere (TSA not the identity, BN stats not defaults)
        for name, p in official.named_parameters():
            if not name.startswith(("conv1", "bn1", "layer")):
                p.normal_(0, 0.2)
        for m in official.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return official.eval(), cfg


def test_converted_model_matches_official(official_and_cfg, tmp_path) -> None:
    official, cfg = official_and_cfg
    sd = {f"module.{k}": v for k, v in official.state_dict().items()}
    converted = convert_official_gltr(sd, cfg.model)
    model = build_model(cfg.model)
    model.load_state_dict(converted, strict=True)
    x = torch.randn(2, 5, 3, 32, 16)
    with torch.no_grad():
        ref_embed, ref_logits = official(x)
        model.eval()
        torch.testing.assert_close(model(x), ref_embed, rtol=1e-4, atol=1e-5)
        # train head on the same feature: BN in eval so logits are deterministic
        torch.testing.assert_close(model.head.classifier(torch.relu(model.head.bn(ref_embed))), ref_logits)
    w = official.feat2.weight
    torch.testing.assert_close(converted["temporal.dtp.1.weight"], w[:, 0].permute(0, 2, 1))
    assert "fc.weight" not in converted and "backbone.fc.weight" not in converted
    torch.save(converted, tmp_path / "gltr.pt")  # what tools/convert_checkpoint.py writes
    reloaded = torch.load(tmp_path / "gltr.pt", weights_only=True)
    assert reloaded.keys() == converted.keys()


def test_old_checkpoint_without_num_batches_tracked(official_and_cfg) -> None:
    official, cfg = official_and_cfg
    sd = {k: v for k, v in official.state_dict().items() if not k.endswith("num_batches_tracked")}
    converted = convert_official_gltr(sd, cfg.model)
    build_model(cfg.model).load_state_dict(converted, strict=True)


def test_clear_errors(official_and_cfg) -> None:
    official, cfg = official_and_cfg
    sd = dict(official.state_dict())
    missing = {k: v for k, v in sd.items() if k != "feat1.weight"}
    with pytest.raises(ValueError, match=r"missing keys .*temporal\.dtp\.0\.weight"):
        convert_official_gltr(missing, cfg.model)
    wrong = dict(sd, **{"classifier.weight": torch.zeros(9, 64)})
    with pytest.raises(ValueError, match="shape mismatches: classifier.weight"):
        convert_official_gltr(wrong, cfg.model)
    extra = dict(sd, **{"Nonlocal_block1.g.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected keys .*Nonlocal_block1"):
        convert_official_gltr(extra, cfg.model)
    cfg.model.head = "bnneck"
    with pytest.raises(ValueError, match="model.head=gltr"):
        convert_official_gltr(sd, cfg.model)
