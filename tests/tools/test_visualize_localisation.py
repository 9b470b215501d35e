"""What the visualisations show is where the evidence is (slow, CPU): a TANet with CBAM trained briefly on
the synthetic motion data puts more of its Grad-CAM mass on the moving object than the object's share of
the frame's area. The generator knows where the object is (``video_object_masks``); the masks go through the
same frame sampling and crop as the frames. CBAM's spatial maps are recorded too but not asserted: after
this budget they are still flat (their BatchNorm starts at weight 0, a gate of 0.5 everywhere; measured
mass 0.0430 on an area share of 0.0430).

Run alone: ``python -m pytest tests/tools/test_visualize_localisation.py -m slow -q``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from video_attn.apis import load_model
from video_attn.apis.gradcam import frame_gradcam
from video_attn.apis.training import train
from video_attn.apis.visual_clip import load_visual_clip
from video_attn.config import load_config
from video_attn.data.synthetic.action import make_action_dataset, video_object_masks
from video_attn.models.attention_capture import AttentionRecorder

pytest.importorskip("pytorch_grad_cam")

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "tanet_r18.yaml"
DATA_KEYS = dict(seed=5, min_frames=12, max_frames=12, size=32)  # what the masks of a video depend on
DATA = dict(train_per_class=32, val_per_class=6, **DATA_KEYS)
# the quick start's recipe with CBAM, cut to fit a slow test: 4 frames of 32 px, 240 steps
RECIPE = ["model.backbone.attention=cbam", "model.num_segments=4", "data.input_size=[32,32]",
          "data.scale_size=32", "train.iters=240", "data.num_workers=0", "train.eval_every_epochs=1000"]
CAM_LAYER = "backbone.layer1"  # 8 x 8 maps at 32 px: fine enough to localise a 6-9 px object


def mass_share(maps: np.ndarray, masks: np.ndarray) -> float:
    """The share of the (non-negative) maps' total that lies on the object, over all frames."""
    return float((maps * masks).sum() / max(maps.sum(), 1e-12))


@pytest.fixture(scope="module")
def shares(tmp_path_factory) -> dict[str, float]:
    """Train the recipe once; the mean object-area share and the Grad-CAM / CBAM-spatial mass shares over
    the validation videos."""
    tmp_path = tmp_path_factory.mktemp("localisation")
    make_action_dataset(tmp_path / "data", **DATA)
    cfg = load_config(CONFIG, [f"data.root={tmp_path / 'data'}", f"work_dir={tmp_path / 'run'}", *RECIPE])
    train(cfg)
    model = load_model(checkpoint=tmp_path / "run" / "checkpoints" / "last.pt", device="cpu")

    area, cam_mass, attn_mass = [], [], []
    for index, line in enumerate((tmp_path / "data" / "val.txt").read_text().splitlines()):
        name, label = line.split()
        visual = load_visual_clip(model.cfg, tmp_path / "data" / name)
        # the masks as frames: the same sampled indices and crop as the video's frames
        masks = video_object_masks("val", index, int(label), **DATA_KEYS)
        masks = load_visual_clip(model.cfg, np.repeat(masks[..., None], 3, -1).astype(np.uint8) * 255)
        on_object = masks.frames[..., 0] > 127  # (T, H, W)

        cams, _ = frame_gradcam(model, visual.clip, CAM_LAYER, target=int(label))
        with torch.no_grad(), AttentionRecorder(model, kinds=["spatial"]) as recorder:
            model(visual.clip[None])
        spatial = [
            torch.nn.functional.interpolate(r.value[0].float(), size=on_object.shape[-2:], mode="bilinear")
            for r in recorder.records.values()
        ]  # (T, 1, H, W) per CBAM
        area.append(on_object.mean())
        cam_mass.append(mass_share(cams[0], on_object))
        attn_mass.append(np.mean([mass_share(s[:, 0].numpy(), on_object) for s in spatial]))
    means = {"area": area, "gradcam": cam_mass, "cbam": attn_mass}
    return {key: float(np.mean(values)) for key, values in means.items()}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_gradcam_mass_sits_on_the_moving_object(shares: dict[str, float]) -> None:
    # measured: area 0.043, Grad-CAM mass 0.145
    assert shares["gradcam"] > 1.5 * shares["area"], shares
