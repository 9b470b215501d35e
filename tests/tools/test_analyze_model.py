"""Model cost (video_attn.apis.model_cost, tools/analyze_model.py): parameters, multiply-adds against hand
counts and published figures, the per-stage and per-module breakdown, latency, the command line.

Published figures (MACs, the unit papers call FLOPs):
- ResNet-50 at 224 px: 4.1 G per frame (torchvision lists 4.09 G with its 1000-class fc). This project's
  backbone counts exactly torchvision's minus the fc, and TSN-R50 8 frames = 8 x (backbone + 400-class fc).
- TANet-R50, 8 frames (mmaction2's configs/recognition/tanet/metafile.yml): Kinetics-400 "43 G" =
  43,065,983,104 and 25,590,320 parameters; Something-Something V1 32,972,787,840 and 25,127,246. The
  parameters are equal here. The MACs: this project gives 42.78 G for the Kinetics view (8 frames of
  256 x 256, the three-crop test) and 32.76 G for the SSv1 one (224 x 224, centre crop), so mmaction2's 43 G
  is the 256 px view (at 224 px TANet-R50 is 32.8 G: TAM adds 0.06 G, 0.2 %). The remaining 0.7 % is the
  counting convention: mmaction2's counter (mmcv's module hooks) also counts every BatchNorm element twice,
  every ReLU and pooling element once, and cannot see TAM's aggregation (a functional grouped conv, which
  this project counts). Counting by those rules here reproduces both published figures exactly.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from video_attn.apis import analyze_model, count_macs, count_parameters
from video_attn.config import load_config
from video_attn.models import build_model
from video_attn.models.attention.factory import CONVS, GATES, RESIDUALS, STAGE_MODULES
from video_attn.models.backbones.resnet import resnet50
from video_attn.models.temporal.tam import TAM

REPO = Path(__file__).resolve().parents[2]
R50_BACKBONE_224 = 4_087_136_256  # torchvision resnet50's 4,089,184,256 minus its fc (2048 x 1000)

# one tiny TANet per backbone module kind: (backbone keys, the row's class name)
MODULES = {
    **{name: ({"attention": name}, cls.__name__) for name, cls in GATES.items()},
    **{name: ({"conv": name}, cls.__name__) for name, cls in CONVS.items()},
    **{name: ({"residual": name}, cls.__name__) for name, cls in RESIDUALS.items()},
    **{name: ({"stage_module": name}, cls.__name__) for name, cls in STAGE_MODULES.items()},
}
MODULES["sa"] = ({"attention": "sa", "attention_kwargs": {"groups": "auto"}}, "ShuffleAttention")


# ----------------------------------------------------------------------------------- counts by hand
def test_macs_of_a_plain_conv_net_equal_the_hand_count() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 8 x 8 outputs x 8 channels x 3*3*3 = 13,824
        nn.ReLU(),
        nn.Conv2d(8, 4, 1, stride=2),  # 4 x 4 outputs x 4 channels x 8 = 512 (biases are no multiply-adds)
        nn.Flatten(),
        nn.Linear(64, 10),  # 640
    )
    macs = count_macs(net, (1, 3, 8, 8))
    assert macs == {"": 14_976, "0": 13_824, "2": 512, "4": 640}
    assert count_parameters(net) == (sum(p.numel() for p in net.parameters()),) * 2


def test_tam_macs_include_its_aggregation() -> None:
    """N=2 clips, T=4, C=8, 5 x 5, K=3, alpha 2, beta 4: the global branch's Linears 2*8*(4*8 + 8*3), the
    local branch's Conv1ds 2*4*(2*8*3 + 8*2), and the depthwise temporal convolution 2*8*4*25*3 (counted
    through the equal-valued grouped_conv form; the default shifted sum is elementwise work)."""
    tam = TAM(8, num_segments=4)
    expected = 2 * 8 * (4 * 8 + 8 * 3) + 2 * 4 * (2 * 8 * 3 + 8 * 2) + 2 * 8 * 4 * 25 * 3
    assert count_macs(tam, (8, 8, 5, 5))[""] == expected == 6_208
    assert tam.aggregation == "shift"  # the model is not changed


def test_parameters_total_and_trainable(tiny) -> None:
    cfg = tiny.config("tanet")
    model = tiny.model(cfg)
    cost = analyze_model(cfg, latency=False)
    assert cost.params == cost.trainable_params == sum(p.numel() for p in model.parameters())
    assert sum(row.params for row in cost.stages) == cost.params
    assert sum(row.macs for row in cost.stages) == cost.macs_per_view
    cfg.train.freeze = ["backbone.layer1"]
    frozen = sum(p.numel() for p in model.backbone.layer1.parameters())
    assert analyze_model(cfg, latency=False).trainable_params == cost.params - frozen


# ------------------------------------------------------------------------------------ published figures
def test_resnet50_is_4_1_g_macs_per_224_px_frame() -> None:
    assert count_macs(resnet50(), (1, 3, 224, 224))[""] == R50_BACKBONE_224
    assert round(R50_BACKBONE_224 / 1e9, 1) == 4.1


def test_tsn_r50_8_frames_is_8_frames_of_resnet50() -> None:
    cfg = load_config(REPO / "configs/action/tsn_r50_kinetics400_8f.yaml")
    cost = analyze_model(cfg, input_size=(224, 224), views=1, latency=False)
    assert cost.view_shape == (8, 3, 224, 224) and cost.macs_per_video == cost.macs_per_view
    assert cost.macs_per_view == 8 * (R50_BACKBONE_224 + 2048 * 400)
    assert cost.params == 23_508_032 + 2048 * 400 + 400  # the backbone (resnet50 docstring) and the fc
    assert cost.modules == [] and cost.plain is None


def mmcv_macs(cfg, view_shape) -> int:
    """MACs by the rules of mmcv's ``get_model_complexity_info`` (mmaction2's figures): module hooks only
    (functional ops such as TAM's aggregation are not seen); conv and linear multiply-adds without biases;
    BatchNorm 2 per input element (affine); ReLU 1 per element; max / adaptive-average pooling 1 per input
    element (mmaction2's TSN head pools the last feature maps with an nn.AdaptiveAvgPool2d)."""
    with torch.device("meta"):
        model = build_model(cfg.model).eval()
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        x = inputs[0]
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            positions = output.shape[0] * math.prod(output.shape[2:])
            per_position = math.prod(module.kernel_size) * x.shape[1] // module.groups
            total += positions * module.out_channels * per_position
        elif isinstance(module, nn.Linear):
            total += x.numel() * module.out_features
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            total += 2 * x.numel()
        elif isinstance(module, (nn.ReLU, nn.MaxPool2d)):
            total += x.numel()

    for module in model.modules():
        module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros((1, *view_shape), device="meta"))
    frames, _, height, width = view_shape
    return total + frames * model.backbone.num_features * (height // 32) * (width // 32)  # the head's pooling


@pytest.mark.parametrize(
    "config,view,published_macs,published_params",
    [
        ("tanet_r50_kinetics400_8f", (8, 3, 256, 256), 43_065_983_104, 25_590_320),
        ("tanet_r50_sthv1_8f", (8, 3, 224, 224), 32_972_787_840, 25_127_246),
    ],
)
def test_tanet_r50_matches_mmaction2(config: str, view, published_macs: int, published_params: int) -> None:
    cfg = load_config(REPO / f"configs/action/{config}.yaml", ["model.backbone.pretrained=null"])
    cost = analyze_model(cfg, latency=False)  # the view of the config's test protocol
    assert cost.view_shape == view and cost.params == published_params
    assert 0.99 * published_macs < cost.macs_per_view < published_macs  # 42.78 G vs 43.07 G; 32.76 vs 32.97
    assert mmcv_macs(cfg, view) == published_macs


def test_tanet_r50_at_224_px_and_what_tam_adds() -> None:
    cfg = load_config(REPO / "configs/action/tanet_r50_kinetics400_8f.yaml")
    assert analyze_model(cfg, latency=False).views == 30  # 10 clips x 3 crops
    at_224 = analyze_model(cfg, input_size=(224, 224), latency=False)
    assert round(at_224.macs_per_view / 1e9, 2) == 32.76
    (tam,) = at_224.modules
    assert tam.name.startswith("TAM") and tam.count == 16
    assert at_224.macs_per_view - at_224.plain.macs == tam.macs and round(tam.macs / 1e9, 2) == 0.06


# ------------------------------------------------------------------------------------------ breakdown
@pytest.mark.parametrize("name", list(MODULES))
def test_every_attention_module_has_its_row(tiny, name: str) -> None:
    backbone, class_name = MODULES[name]
    cost = analyze_model(tiny.config("tanet", **backbone), latency=False)
    rows = {row.name.split(" ")[0]: row for row in cost.modules}
    assert class_name in rows and "TAM" in rows, list(rows)
    assert rows[class_name].count > 0 and rows[class_name].params > 0
    # SA's gates are a GroupNorm and per-channel affine maps: elementwise work, no multiply-adds counted
    assert (rows[class_name].macs == 0) == (name == "sa")
    assert cost.plain is not None  # (GSA's attention costs less than the 3x3 conv it replaces)


def test_gates_and_tam_add_exactly_their_rows(tiny) -> None:
    cost = analyze_model(tiny.config("tanet", attention="se"), latency=False)
    assert [row.name for row in cost.modules] == ["TAM (tanet)", "SqueezeExcite (se)"]
    assert cost.params - cost.plain.params == sum(row.params for row in cost.modules)
    assert cost.macs_per_view - cost.plain.macs == sum(row.macs for row in cost.modules)


def test_reid_views_follow_the_test_mode(tiny) -> None:
    cfg = tiny.config("gltr")
    cost = analyze_model(cfg, latency=False)  # evenly: one clip of num_segments frames per tracklet
    assert cost.task == "reid" and cost.view_shape == (4, 3, 32, 16) and cost.views == 1
    assert [row.name for row in cost.modules] == ["GLTR (gltr)"]
    assert [row.name for row in cost.stages][-2:] == ["temporal", "head"]
    cfg.eval.test_mode = "all"
    whole = analyze_model(cfg, latency=False)
    assert whole.views is None and whole.macs_per_video is None
    assert whole.macs_per_frame == cost.macs_per_frame


def test_latency_is_measured(tiny) -> None:
    cost = analyze_model(tiny.config("tsn"), batch_size=2, warmup=1, repeats=2, device="cpu")
    (eager,) = cost.latency
    assert eager.mode == "eager" and eager.device == "cpu" and eager.batch_size == 2
    assert 0 < eager.min_ms <= eager.median_ms
    assert eager.clips_per_s == pytest.approx(2000 / eager.median_ms)
    assert eager.frames_per_s == pytest.approx(4 * eager.clips_per_s)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_counts_without_latency_and_writes_json(load_tool, tiny, tmp_path, capsys) -> None:
    run = tiny.write_run(tmp_path, tiny.config("tanet", attention="cbam"))
    out = tmp_path / "cost.json"
    code = load_tool("analyze_model").main([run.config, "--no-latency", "--views", "5", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for text in ("multiply-adds (MACs", "per view", "per video", "(5 views)", "layer4", "CBAM (cbam)",
                 "TAM (tanet)", "plain ResNet-18 TSN", "FLOPs = 2 x MACs"):
        assert text in printed, text
    assert "latency" not in printed
    saved = json.loads(out.read_text())
    assert saved["views"] == 5 and saved["macs_per_video"] == 5 * saved["macs_per_view"]
    assert saved["flops_per_view"] == 2 * saved["macs_per_view"] and saved["latency"] == []
    assert {row["name"] for row in saved["modules"]} == {"TAM (tanet)", "CBAM (cbam)"}


def test_cli_measures_latency_at_a_given_size(load_tool, tiny, tmp_path, capsys) -> None:
    run = tiny.write_run(tmp_path, tiny.config("tsn"))
    argv = [run.config, "--input-size", "48", "64", "--warmup", "1", "--repeats", "2", "--device", "cpu"]
    assert load_tool("analyze_model").main(argv) == 0
    printed = capsys.readouterr().out
    assert "view: 4 frames of 48x64" in printed and "input size set to 48x64" in printed
    assert "latency (inference mode" in printed and re.search(r"\n  eager +cpu +1 ", printed)


def test_cli_one_line_errors(load_tool, tiny, tmp_path, capsys) -> None:
    run = tiny.write_run(tmp_path, tiny.config("tsn"))
    tool = load_tool("analyze_model")
    assert tool.main([run.config, "--no-latency", "model.num_classes=null"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model.num_classes is not set") and "\n" not in err
    with pytest.raises(SystemExit):
        tool.main([run.config, "--no-latency", "--compile"])


@pytest.mark.slow
def test_cli_times_the_compiled_model(load_tool, tiny, tmp_path, capsys) -> None:
    run = tiny.write_run(tmp_path, tiny.config("tsn"))
    argv = [run.config, "--compile", "--warmup", "2", "--repeats", "2", "--device", "cpu"]
    assert load_tool("analyze_model").main(argv) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\n  eager +cpu ", printed) and re.search(r"\n  compile +cpu +1 ", printed)
