"""tools/visualize.py end to end on tiny random-init checkpoints (an action TANet with spatial, channel and
branch attention; a GLTR ReID model), and the per-frame Grad-CAM it uses (video_attn.apis.gradcam)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from video_attn.apis.gradcam import FrameClassifier, frame_gradcam
from video_attn.apis.visual_clip import load_visual_clip
from video_attn.data.synthetic.action import render_moving_object, write_h264

pytest.importorskip("pytorch_grad_cam")

ACTION_BACKBONE = {"attention": "cbam", "conv": ["none", "sk", "none", "none"], "residual": "highway"}


@pytest.fixture(scope="module")
def action_run(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("vis_action")
    run = tiny.write_run(root, tiny.config("tanet", **ACTION_BACKBONE))
    run.video = str(root / "clip.mp4")
    write_h264(run.video, render_moving_object(np.random.default_rng(0), 1, 12, size=32))
    return run


def argv(run, source: str, out: Path, *extra: str) -> list[str]:
    return [run.config, "--checkpoint", run.checkpoint, source, "--out", str(out), *extra]


def image_links(index: Path) -> list[str]:
    return re.findall(r"(?:src|href)='([^']+)'", index.read_text())


def test_action_outputs_and_page(load_tool, action_run, tmp_path, capsys) -> None:
    out = tmp_path / "vis"
    tool = load_tool("visualize")
    rc = tool.main(argv(action_run, action_run.video, out, "--dpi", "60", "data.val.crop=center"))
    assert rc == 0, capsys.readouterr().err
    expected = {"attention_grid.png", "gradcam.png", "tam_kernels.png", "tam_importance.png",
                "channel_weights.png", "branch_weights.png", "index.html"}
    assert {p.name for p in out.iterdir()} == expected
    links = image_links(out / "index.html")
    assert set(links) == expected - {"index.html"}  # relative links, every figure on the page
    for name in links:
        with Image.open(out / name) as image:
            assert image.width > 100 and image.height > 50
    page = (out / "index.html").read_text()
    assert "<td>backbone.layer2.0.conv1</td><td>SelectiveKernel</td>" in page  # the records table
    assert "prediction:" in page


def test_layers_and_target_select_what_is_drawn(load_tool, action_run, tmp_path, capsys) -> None:
    out = tmp_path / "vis"
    tool = load_tool("visualize")
    rc = tool.main(argv(action_run, action_run.video, out, "--dpi", "50", "--layers", "backbone.layer3",
                        "--target", "2", "--cam-layer", "backbone.layer2"))
    assert rc == 0, capsys.readouterr().err
    page = (out / "index.html").read_text()
    assert "backbone.layer3.0.attn.spatial" in page and "backbone.layer2.0.attn" not in page
    assert "Grad-CAM on backbone.layer2, class 2" in page
    assert "SelectiveKernel" not in page  # SK sits in layer2 only

    rc = tool.main(argv(action_run, action_run.video, out, "--target", "jump"))
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "--target 'jump'" in err


def test_missing_grad_cam_is_one_line_naming_the_extra(load_tool, action_run, tmp_path, monkeypatch,
                                                        capsys) -> None:
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # import fails as when not installed
    tool = load_tool("visualize")
    rc = tool.main(argv(action_run, action_run.video, tmp_path / "vis"))
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and 'pip install -e ".[visualize]"' in err
    assert "Traceback" not in err and not (tmp_path / "vis").exists()


def test_reid_tracklet_shows_gltr_attention(load_tool, tiny, tmp_path, capsys) -> None:
    run = tiny.write_run(tmp_path, tiny.config("gltr", attention="cbam"), "reid")
    tracklet = tmp_path / "tracklet"
    tracklet.mkdir()
    for i, frame in enumerate(render_moving_object(np.random.default_rng(1), 0, 10, size=32)):
        Image.fromarray(frame[:, 8:24]).save(tracklet / f"{i:03d}.jpg")
    out = tmp_path / "vis"
    rc = load_tool("visualize").main(argv(run, str(tracklet), out, "--dpi", "50"))
    assert rc == 0, capsys.readouterr().err
    names = {p.name for p in out.iterdir()}
    assert {"temporal_attention.png", "attention_grid.png", "channel_weights.png", "index.html"} <= names
    assert "gradcam.png" not in names  # an embedding has no class score
    assert set(image_links(out / "index.html")) <= names
    assert "temporal.tsa.0" in (out / "index.html").read_text()


def test_frame_classifier_gives_each_frame_its_clips_logits(tiny) -> None:
    model = tiny.model(tiny.config("tanet"))
    clips = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        logits = model(clips)
        per_frame = FrameClassifier(model, 4)(clips.flatten(0, 1))
    torch.testing.assert_close(per_frame, logits.repeat_interleave(4, dim=0))


def test_gradcam_maps_are_per_frame(tiny, action_run) -> None:
    model = tiny.model(tiny.config("tanet", **ACTION_BACKBONE))
    visual = load_visual_clip(model_cfg := action_run.cfg, action_run.video)
    assert visual.clip.shape == (4, 3, 32, 32) and visual.frames.shape == (4, 32, 32, 3)
    assert model_cfg.model.num_segments == len(visual.indices)
    cams, classes = frame_gradcam(model, visual.clip, "backbone.layer2")
    assert cams.shape == (1, 4, 32, 32) and 0 <= cams.min() and cams.max() <= 1 + 1e-6
    with torch.no_grad():
        assert classes == [int(model(visual.clip[None]).argmax())]
    differences = [np.abs(cams[0, 0] - cams[0, t]).max() for t in range(1, 4)]
    assert min(differences) > 0.05  # one map per frame, following that frame's content
    _, forced = frame_gradcam(model, visual.clip, model.backbone.layer3, target=2)
    assert forced == [2]
    assert all(p.grad is None for p in model.parameters())
