"""Export to ONNX and TorchScript (video_attn.apis.export, tools/export.py): every model family and every
attention module round-trips with a max difference under 1e-4 from eager PyTorch; a module that cannot be
exported stops the export with one line naming it.

Two tiny TANets carry every registered attention module between them (one per stage), so the whole
registry is covered in two exports; each arch is exported on its own as well. An ONNX export takes seconds
(torch.export, then the ONNX translation), so: the tiny TANets / TSM carry their module in one stage (the
same module repeated elsewhere); the ONNX round trips of TANet (the attention models are TANets) and TSN
(the command-line test) are not repeated; the ReID baselines' ONNX round trips are in the slow tier (GLTR's
is not); every TorchScript round trip is in the fast one.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from video_attn.apis.export import ExportError, export_checkpoint, export_model, exportable_copy
from video_attn.models import ACTION_ARCHS, REID_ARCHS
from video_attn.models.attention.factory import CONVS, GATES, RESIDUALS, STAGE_MODULES
from video_attn.models.temporal.tam import TAM

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOLERANCE = 1e-4
FORMATS = ["onnx", "torchscript"]
STAGES = [2]  # tanet / tsm: the temporal module in the blocks of layer2
SLOW_ONNX = ("temporal_pool", "temporal_attention", "gru")
DONE_ONNX = ("tanet", "tsn")  # by test_every_attention_module_exports_on_tanet, test_cli_exports_onnx_...

# every registered backbone module, one per stage; SA's default 64 groups need 128 channels (base width 16)
ATTENTION_MODELS = {
    "gates_convs_highway_stage": {
        "base_width": 16,
        "attention": ["se", "eca", "cbam", "sa"],
        "conv": ["sk", "splat", "condconv", "dynamic"],
        "residual": "highway",
        "stage_module": ["none", "residual_attention", "none", "none"],
    },
    "cbam_halves_gsa": {
        "attention": ["cbam_channel", "cbam_spatial", "none", "none"],
        "conv": ["gsa", "none", "none", "none"],
    },
}


def round_trip(tiny, tmp_path, fmt: str, arch: str, **backbone) -> None:
    cfg = tiny.config(arch, temporal_stages=STAGES, **backbone)
    model = tiny.model(cfg)
    shape = (1, cfg.model.num_segments, 3, *cfg.data.input_size)
    out = tmp_path / f"model.{fmt}"
    result = export_model(model, out, fmt, shape, tolerance=TOLERANCE, optimize=False)
    assert out.is_file() and result.passed, result
    assert result.max_abs_diff < TOLERANCE
    with torch.no_grad():
        assert result.output_shape == tuple(model(torch.zeros(shape)).shape)


def test_the_attention_models_hold_every_registered_module(tiny) -> None:
    registered = {*GATES.values(), *CONVS.values(), *RESIDUALS.values(), *STAGE_MODULES.values()}
    present = {
        type(m)
        for backbone in ATTENTION_MODELS.values()
        for m in tiny.model(tiny.config(temporal_stages=STAGES, **backbone)).modules()
    }
    assert TAM in present
    assert not {cls.__name__ for cls in registered - present}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(ATTENTION_MODELS))
def test_every_attention_module_exports_on_tanet(tiny, tmp_path, fmt: str, name: str) -> None:
    round_trip(tiny, tmp_path, fmt, "tanet", **ATTENTION_MODELS[name])


FAMILIES = [
    pytest.param(arch, fmt, marks=[pytest.mark.slow] if fmt == "onnx" and arch in SLOW_ONNX else [])
    for arch in [*ACTION_ARCHS, *REID_ARCHS]
    for fmt in FORMATS
    if not (fmt == "onnx" and arch in DONE_ONNX)
]


@pytest.mark.parametrize("arch,fmt", FAMILIES)
def test_every_model_family_exports(tiny, tmp_path, arch: str, fmt: str) -> None:
    round_trip(tiny, tmp_path, fmt, arch)


def test_exportable_copy_switches_tam_aggregation_and_keeps_the_model(tiny, caplog) -> None:
    model = tiny.model(tiny.config("tanet"))
    with caplog.at_level(logging.INFO, logger="video_attn.apis.export"):
        copy = exportable_copy(model)
    assert "8 TAM module(s) switched" in caplog.text
    assert {m.aggregation for m in model.modules() if isinstance(m, TAM)} == {"shift"}
    assert {m.aggregation for m in copy.modules() if isinstance(m, TAM)} == {"shift_autograd"}
    clip = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(copy(clip), model(clip), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------- unexportable modules
class NumpyTanh(torch.autograd.Function):
    """A gate computed in NumPy: TorchScript cannot save the Python call, torch.export cannot trace it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.tanh(x.detach().cpu().numpy()))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class NumpyGate(nn.Module):
    def __init__(self, channels: int = 0, **kwargs) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * NumpyTanh.apply(x)


@torch.library.custom_op("video_attn_test::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    """An operator that torch.export keeps and ONNX has no translation for."""
    return x.sin()


@mystery.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class MysteryGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * mystery(x)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unexportable_module_is_named_in_one_line(tiny, tmp_path, fmt: str) -> None:
    model = tiny.model(tiny.config("tsn"))
    model.backbone.layer2[1].attn = NumpyGate()
    out = tmp_path / "model.bin"
    with pytest.raises(ExportError) as info:
        export_model(model, out, fmt, (1, 4, 3, 32, 32), optimize=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"cannot export to {fmt}: ")
    assert "module backbone.layer2.1.attn (NumpyGate)" in message
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing written, no partial file left


def test_an_operator_without_onnx_translation_is_named(tiny, tmp_path) -> None:
    model = tiny.model(tiny.config("tsn"))
    model.backbone.layer1[0].attn = MysteryGate()
    with pytest.raises(ExportError) as info:
        export_model(model, tmp_path / "m.onnx", "onnx", (1, 4, 3, 32, 32), optimize=False)
    message = str(info.value)
    assert "\n" not in message
    assert "module backbone.layer1.0.attn (MysteryGate)" in message and "mystery" in message
    # TorchScript records the registered operator and runs it
    result = export_model(model, tmp_path / "m.pt", "torchscript", (1, 4, 3, 32, 32))
    assert result.passed


# ------------------------------------------------------------------------------------- checkpoints, CLI
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_checkpoint_of_a_reid_model_gives_embeddings(tiny, tmp_path) -> None:
    run = tiny.write_run(tmp_path, tiny.config("gltr"))
    result = export_checkpoint(run.cfg, run.checkpoint, "torchscript", tmp_path / "gltr.pt", batch_size=2)
    assert result.output_name == "embeddings" and result.input_shape == (2, 4, 3, 32, 16)
    assert result.output_shape == (2, 64) and result.passed
    loaded = torch.jit.load(str(tmp_path / "gltr.pt"))
    clip = torch.randn(2, 4, 3, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clip), tiny.model(run.cfg)(clip), rtol=1e-5, atol=1e-5)


@pytest.fixture
def action_run(tiny, tmp_path):
    return tiny.write_run(tmp_path / "run", tiny.config("tsn"))


def test_cli_exports_onnx_and_reports_the_difference(load_tool, action_run, tmp_path, capsys) -> None:
    import onnx

    out, record = tmp_path / "tsn.onnx", tmp_path / "export.json"
    argv = [action_run.config, "--checkpoint", action_run.checkpoint, "--format", "onnx", "--out", str(out)]
    code = load_tool("export").main([*argv, "--batch-size", "2", "--json", str(record)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "input [2, 4, 3, 32, 32] float32 clips" in printed and "output [2, 3] logits" in printed
    assert "passed" in printed and "max abs difference" in printed
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["clips"] and [o.name for o in graph.output] == ["logits"]
    saved = json.loads(record.read_text())
    assert saved["passed"] and saved["max_abs_diff"] < TOLERANCE and saved["output_shape"] == [2, 3]


def test_cli_exit_status_is_1_above_the_tolerance(load_tool, action_run, tmp_path, capsys, monkeypatch):
    import video_attn.apis.export as export_module

    real = export_module._run_exported
    monkeypatch.setattr(export_module, "_run_exported", lambda *a: real(*a) + 1e-3)
    argv = [action_run.config, "--checkpoint", action_run.checkpoint, "--format", "torchscript"]
    code = load_tool("export").main([*argv, "--out", str(tmp_path / "m.pt")])
    assert code == 1
    assert "FAILED" in capsys.readouterr().out
    assert (tmp_path / "m.pt").is_file()  # kept for inspection


def test_cli_names_the_module_that_cannot_export(load_tool, tiny, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(GATES, "numpy_gate", NumpyGate)
    run = tiny.write_run(tmp_path, tiny.config("tsn", attention=["none", "none", "numpy_gate", "none"]))
    argv = [run.config, "--checkpoint", run.checkpoint, "--format", "torchscript"]
    assert load_tool("export").main([*argv, "--out", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: cannot export to torchscript: ")
    assert "module backbone.layer3.0.attn (NumpyGate)" in err
    assert not (tmp_path / "m.pt").exists()


def test_cli_one_line_errors(load_tool, action_run, tmp_path, capsys) -> None:
    tool = load_tool("export")
    missing = [action_run.config, "--checkpoint", str(tmp_path / "none.pt"), "--format", "onnx", "--out", "x"]
    assert tool.main(missing) == 1
    assert capsys.readouterr().err.strip() == f"error: checkpoint not found: {tmp_path / 'none.pt'}"
    bad_key = [action_run.config, "--checkpoint", action_run.checkpoint, "--format", "onnx", "--out", "x"]
    assert tool.main([*bad_key, "model.no_such_key=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no_such_key" in err and "\n" not in err
