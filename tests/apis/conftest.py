"""Fixtures of the inference tests: tiny models whose answers are known by construction, and their data.

Action: a TANet (ResNet-18, base width 8, 4 segments, 32 px) with random convolutions whose classifier is set
to the nearest class mean of its features on one video of each colour (red, green, blue); it then names the
colour of other, differently noisy videos. ReID: a tiny GLTR with random weights (the tests compare
embeddings, not identities) on a small synthetic MARS-layout set.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from video_attn.config.loader import build_section
from video_attn.config.schema import Config
from video_attn.data.synthetic.action import write_h264
from video_attn.data.transforms import build_clip_transform
from video_attn.engine.checkpoint import atomic_save
from video_attn.models import build_model

COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
FPS = 8
SIZE = 32
CLIP_FRAMES = 16  # 2 s at FPS


def colour_frames(colour: str, num_frames: int = CLIP_FRAMES, seed: int = 0) -> np.ndarray:
    """uint8 (T, SIZE, SIZE, 3): one colour with per-pixel noise and a grey square that moves."""
    rng = np.random.default_rng(seed)
    frames = np.asarray(COLOURS[colour], np.float32) + rng.normal(0, 12, (num_frames, SIZE, SIZE, 3))
    for t in range(num_frames):
        x = (2 * t) % (SIZE - 6)
        frames[t, 10:16, x : x + 6] = 128
    return frames.clip(0, 255).astype(np.uint8)


def action_tree(root: Path) -> dict:
    return {
        "work_dir": str(root / "work"),
        "seed": 0,
        "device": "cpu",
        "model": {
            "arch": "tanet",
            "num_classes": len(COLOURS),
            "num_segments": 4,
            "dropout": 0.0,
            "backbone": {"depth": 18, "base_width": 8},
        },
        "data": {
            "format": "video_list",
            "root": str(root),
            "backend": "pyav",
            "num_workers": 0,
            "pin_memory": False,
            "input_size": [SIZE, SIZE],
            "scale_size": SIZE,
            # two temporal views per video: predictions average them
            "val": {"ann_file": "val.txt", "sampler": "tsn", "num_clips": 2, "crop": "center"},
        },
        "eval": {"batch_size": 2, "average": "logits"},
    }


@torch.no_grad()
def fit_nearest_mean(model: torch.nn.Module, cfg: Config, examples: list[np.ndarray]) -> None:
    """Set ``model.classifier`` so that class k scores ``-s/2 ||f - mu_k||^2`` (+ a constant shared by the
    classes), ``mu_k`` the mean backbone feature of ``examples[k]`` and ``s`` giving a margin of 4 logits at
    the means: the model names the class whose example it sees as most alike."""
    transform = build_clip_transform(cfg.data, cfg.data.val, train=False)
    means = []
    for frames in examples:
        clip, _ = transform(frames, None, np.random.default_rng(0))
        means.append(model.backbone(clip).mean(dim=0))
    mu = torch.stack(means)
    closest = min(float((mu[i] - mu[j]).pow(2).sum()) for i in range(len(mu)) for j in range(i))
    scale = 8.0 / closest
    model.classifier.weight.copy_(scale * mu)
    model.classifier.bias.copy_(-scale * mu.pow(2).sum(dim=1) / 2)


@pytest.fixture(scope="session")
def action_assets(tmp_path_factory) -> SimpleNamespace:
    """Videos of each colour (other noise than the fit's), a long video (red, then blue from 2 s on), a
    frame folder, and the checkpoint of the colour model (config and class names stored)."""
    root = tmp_path_factory.mktemp("inference_action")
    (root / "videos").mkdir()
    videos = {}
    for i, colour in enumerate(COLOURS):
        videos[colour] = root / "videos" / f"{colour}.mp4"
        write_h264(videos[colour], colour_frames(colour, seed=10 + i), fps=FPS)
    (root / "val.txt").write_text("".join(f"videos/{c}.mp4 {i}\n" for i, c in enumerate(COLOURS)))
    long_video = root / "long.mp4"
    red_then_blue = np.concatenate([colour_frames("red", seed=20), colour_frames("blue", seed=21)])
    write_h264(long_video, red_then_blue, fps=FPS)

    cfg = build_section(Config, action_tree(root))
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    fit_nearest_mean(model, cfg, [colour_frames(c, num_frames=8, seed=1) for c in COLOURS])
    checkpoint = root / "colour.pt"
    atomic_save({"model": model.state_dict(), "config": cfg.to_dict(), "class_names": [*COLOURS]}, checkpoint)
    return SimpleNamespace(
        root=root, cfg=cfg, checkpoint=checkpoint, videos=videos, long_video=long_video, change_at=2.0
    )


@pytest.fixture(scope="session")
def reid_assets(tmp_path_factory) -> SimpleNamespace:
    """A small synthetic MARS-layout set and the checkpoint of a tiny random GLTR (config stored)."""
    from video_attn.data.synthetic.reid import make_reid_dataset

    root = tmp_path_factory.mktemp("inference_reid")
    make_reid_dataset(root / "data", seed=0, num_train_ids=2, num_test_ids=3)
    tree = {
        "work_dir": str(root / "work"),
        "device": "cpu",
        "model": {
            "arch": "gltr",
            "num_classes": 2,
            "num_segments": 4,
            "dropout": 0.0,
            "backbone": {"depth": 18, "base_width": 8, "last_stride": 1},
            "temporal_kwargs": {"embed_dim": 16},
        },
        "data": {
            "format": "mars",
            "root": str(root / "data"),
            "num_workers": 0,
            "pin_memory": False,
            "input_size": [32, 16],
            "train": {"sampler": "consecutive", "crop": "resize"},
            "test": {"crop": "resize"},
        },
        "eval": {"protocol": "mars_official", "test_mode": "evenly", "batch_size": 4},
    }
    cfg = build_section(Config, tree)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    checkpoint = root / "gltr.pt"
    atomic_save({"model": model.state_dict(), "config": cfg.to_dict()}, checkpoint)
    return SimpleNamespace(root=root, cfg=cfg, checkpoint=checkpoint)
