"""Official TAM checkpoint import: a tiny network in the official layout (Bottlenecks wrapped as ``.net``
with a ``.tam``, Dropout as backbone fc, ``new_fc``) gives the same logits after conversion."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from video_attn.config.schema import BackboneConfig, ModelConfig
from video_attn.models import build_model
from video_attn.models.convert.tam import convert_official_tam, infer_tam_model_cfg

ROOT = Path(__file__).resolve().parents[2]


class OfficialTAM(nn.Module):
    """TAM as in the official module (liu-zhy/temporal-adaptive-module, ops/temporal_module.py): alpha 2 and
    beta 4 fixed, ``k`` taps in both the global kernel and the local branch's first Conv1d (padding k // 2),
    grouped-conv aggregation with temporal padding k // 2."""

    def __init__(self, c: int, t: int, k: int = 3) -> None:
        super().__init__()
        self.t, self.k = t, k
        self.G = nn.Sequential(
            nn.Linear(t, 2 * t, bias=False),
            nn.BatchNorm1d(2 * t),
            nn.ReLU(True),
            nn.Linear(2 * t, k, bias=False),
            nn.Softmax(-1),
        )
        self.L = nn.Sequential(
            nn.Conv1d(c, c // 4, k, padding=k // 2, bias=False),
            nn.BatchNorm1d(c // 4),
            nn.ReLU(True),
            nn.Conv1d(c // 4, c, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        nt, c, h, w = x.shape
        n = nt // self.t
        nx = x.view(n, self.t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()
        s = F.adaptive_avg_pool2d(nx.view(n * c, self.t, h, w), 1).view(-1, self.t)
        kernel = self.G(s).view(n * c, 1, -1, 1)
        nx = nx * self.L(s.view(n, c, self.t)).view(n, c, self.t, 1, 1)
        out = F.conv2d(nx.view(1, n * c, self.t, h * w), kernel, padding=(self.k // 2, 0), groups=n * c)
        return out.view(n, c, self.t, h, w).permute(0, 2, 1, 3, 4).contiguous().view(nt, c, h, w)


class OfficialTemporalBottleneck(nn.Module):
    def __init__(self, net: Bottleneck, t: int, k: int = 3) -> None:
        super().__init__()
        self.net = net
        self.tam = OfficialTAM(net.conv1.out_channels, t, k)

    def forward(self, x):
        n = self.net
        out = n.relu(n.bn1(n.conv1(x)))
        out = self.tam(out)
        out = n.relu(n.bn2(n.conv2(out)))
        out = n.bn3(n.conv3(out))
        identity = x if n.downsample is None else n.downsample(x)
        return n.relu(out + identity)


class OfficialTSN(nn.Module):
    """``module.base_model`` (ResNet-50 layout, tiny width, fc = Dropout) + ``module.new_fc``."""

    def __init__(self, width: int, t: int, num_classes: int, k: int = 3) -> None:
        super().__init__()
        self.t = t
        base = nn.Module()
        base.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        base.bn1 = nn.BatchNorm2d(width)
        inplanes = width
        for i, (blocks, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 2))):
            planes = width * 2**i
            layer = []
            for b in range(blocks):
                down = None
                if b == 0:
                    down = nn.Sequential(
                        nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
                    )
                block = Bottleneck(inplanes, planes, stride if b == 0 else 1, down)
                layer.append(OfficialTemporalBottleneck(block, t, k))
                inplanes = planes * 4
            setattr(base, f"layer{i + 1}", nn.Sequential(*layer))
        base.fc = nn.Dropout(0.5)
        self.base_model = base
        self.new_fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):  # (N, T, 3, H, W)
        n = x.shape[0]
        b = self.base_model
        y = F.max_pool2d(F.relu(b.bn1(b.conv1(x.flatten(0, 1)))), 3, 2, 1)
        for i in range(1, 5):
            y = getattr(b, f"layer{i}")(y)
        y = b.fc(y.mean((2, 3)))
        return self.new_fc(y).view(n, self.t, -1).mean(1)


def _official(width=8, t=4, num_classes=5, k=3) -> OfficialTSN:
    torch.manual_seed(0)
    net = OfficialTSN(width, t, num_classes, k)
    with torch.no_grad():  # non-trivial BN and classifier values
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        net.new_fc.weight.normal_(0, 0.5)
    return net.eval()


def _official_state(net: nn.Module) -> dict:
    return {"module." + k: v for k, v in net.state_dict().items()}


def _cfg(width=8, t=4, num_classes=5, k=3) -> ModelConfig:
    return ModelConfig(
        arch="tanet",
        num_classes=num_classes,
        num_segments=t,
        backbone=BackboneConfig(depth=50, base_width=width),
        temporal_kwargs={"kernel_size": k} if k != 3 else {},
    )


@pytest.mark.parametrize("k", [3, 5])
def test_converted_model_gives_official_logits(k):
    official = _official(k=k)
    state = _official_state(official)
    assert "module.base_model.layer1.0.net.conv1.weight" in state
    assert "module.base_model.layer4.2.tam.L.3.weight" in state
    assert state["module.base_model.layer1.0.tam.L.0.weight"].shape[-1] == k
    assert not any(".fc." in key for key in state)
    converted = convert_official_tam(state, _cfg(k=k))
    assert infer_tam_model_cfg(state).temporal_kwargs["kernel_size"] == k
    model = build_model(_cfg(k=k))
    model.load_state_dict(converted, strict=True)
    model.eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), official(x), rtol=1e-4, atol=1e-5)


def test_infer_config_and_mismatch_errors():
    state = _official_state(_official(t=4, num_classes=5))
    inferred = infer_tam_model_cfg(state)
    assert (
        inferred.backbone.depth,
        inferred.backbone.base_width,
        inferred.num_segments,
        inferred.num_classes,
    ) == (50, 8, 4, 5)
    assert inferred.temporal_kwargs == {"alpha": 2, "beta": 4, "kernel_size": 3}
    with pytest.raises(ValueError, match=r"trained with 4 segments .* model.num_segments=8"):
        convert_official_tam(state, _cfg(t=8))
    with pytest.raises(ValueError, match="5 classes but model.num_classes=7"):
        convert_official_tam(state, _cfg(num_classes=7))
    bad = dict(state)
    bad["module.base_model.layer1.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown keys"):
        convert_official_tam(bad, _cfg())
    bad = {k: v for k, v in state.items() if "layer2.1.tam.G.3" not in k}
    with pytest.raises(ValueError, match="missing"):
        convert_official_tam(bad, _cfg())


def _tool():
    path = ROOT / "tools" / "convert_checkpoint.py"
    spec = importlib.util.spec_from_file_location("convert_checkpoint_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_safe_load_refusal_unsafe_flag_and_output(tmp_path, capsys):
    tool = _tool()
    official = _official()
    src = tmp_path / "tam_official.pth.tar"
    # as the official train script saves it, here with a non-tensor object that weights_only refuses
    torch.save(
        {
            "epoch": 50,
            "arch": "resnet50",
            "state_dict": _official_state(official),
            "best_prec1": 76.1,
            "args": argparse.Namespace(lr=0.01),
        },
        src,
    )
    dst = tmp_path / "converted.pt"
    assert tool.main(["tam", str(src), str(dst)]) == 1
    assert "--unsafe-load" in capsys.readouterr().err and not dst.exists()
    assert tool.main(["tam", str(src), str(dst), "--unsafe-load"]) == 0
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt["config"] is None and ckpt["converted_from"]["epoch"] == 50
    model = build_model(_cfg())
    model.load_state_dict(ckpt["model"], strict=True)
    # a 16-segment request against this 4-segment checkpoint names both numbers
    safe = tmp_path / "safe.pt"
    torch.save({"epoch": 1, "state_dict": _official_state(official)}, safe)
    assert tool.main(["tam", str(safe), str(tmp_path / "x.pt"), "--num-segments", "16"]) == 1
    err = capsys.readouterr().err
    assert "4 segments" in err and "model.num_segments=16" in err


def test_tool_gltr_subcommand_reports_bad_input(tmp_path, capsys):
    tool = _tool()
    src = tmp_path / "not_gltr.pth"
    torch.save({"state_dict": {"something.weight": torch.zeros(2)}}, src)
    assert tool.main(["gltr", str(src), str(tmp_path / "out.pt")]) == 1
    assert "classifier.weight" in capsys.readouterr().err
    assert tool.main(["gltr", str(tmp_path / "missing.pth"), str(tmp_path / "out.pt")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert tool.main(["gltr", str(src), str(tmp_path / "out.pt"), "--num-segments", "8"]) == 1
    assert not (tmp_path / "out.pt").exists()
