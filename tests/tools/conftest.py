"""Tiny models of every family for the export and model-cost tests (ResNet-18 at base width 8, few frames,
32 px), their configs and checkpoints. Reached through the ``tiny`` fixture (conftest is not importable
under --import-mode=importlib)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

from video_attn.config.loader import build_section
from video_attn.config.schema import Config
from video_attn.engine.checkpoint import atomic_save
from video_attn.models import REID_ARCHS, build_model

# the small temporal modules of the ReID archs (the defaults are sized for ResNet-50 at 256 x 128)
REID_TEMPORAL_KWARGS: dict[str, dict[str, Any]] = {
    "gltr": {"embed_dim": 16},
    "temporal_pool": {},
    "temporal_attention": {"spatial_kernel": [2, 1]},
    "gru": {"hidden_dim": 16},
}


def tree(
    arch: str = "tanet", num_segments: int = 4, temporal_stages: list[int] | None = None, **backbone: Any
) -> dict[str, Any]:
    """The config tree of a tiny model of ``arch`` (action: 32 x 32 frames, 3 classes, the temporal module
    in the blocks of ``temporal_stages`` (default all); ReID: 32 x 16 frames, last stride 1, 5 identities);
    ``backbone`` overrides ``model.backbone`` keys."""
    if arch in REID_ARCHS:
        return {
            "device": "cpu",
            "task": "reid",
            "model": {
                "arch": arch,
                "num_classes": 5,
                "num_segments": num_segments,
                "dropout": 0.0,
                "backbone": {"depth": 18, "base_width": 8, "last_stride": 1, **backbone},
                "temporal_kwargs": dict(REID_TEMPORAL_KWARGS[arch]),
            },
            "data": {
                "format": "mars",
                "input_size": [32, 16],
                "flip": False,
                "train": {"sampler": "consecutive", "crop": "resize"},
                "test": {"crop": "resize"},
            },
            "eval": {"test_mode": "evenly"},
        }
    return {
        "device": "cpu",
        "task": "action",
        "model": {
            "arch": arch,
            "num_classes": 3,
            "num_segments": num_segments,
            "dropout": 0.0,
            "backbone": {"depth": 18, "base_width": 8, **backbone},
            "temporal_stages": temporal_stages or [1, 2, 3, 4],
        },
        "data": {"input_size": [32, 32], "scale_size": 32},
    }


def config(
    arch: str = "tanet", num_segments: int = 4, temporal_stages: list[int] | None = None, **backbone: Any
) -> Config:
    return build_section(Config, tree(arch, num_segments, temporal_stages, **backbone))


def model(cfg: Config, seed: int = 0) -> torch.nn.Module:
    """``cfg``'s model in eval mode, random weights (seeded) and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    built = build_model(cfg.model)
    for m in built.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return built.eval()


def write_run(root: Path, cfg: Config, name: str = "tiny") -> SimpleNamespace:
    """``cfg`` as ``root/<name>.yaml`` and a checkpoint of its model (config stored) as ``root/<name>.pt``."""
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    checkpoint = root / f"{name}.pt"
    atomic_save({"model": model(cfg).state_dict(), "config": cfg.to_dict()}, checkpoint)
    return SimpleNamespace(config=str(config_path), checkpoint=str(checkpoint), cfg=cfg)


@pytest.fixture(scope="session")
def tiny() -> SimpleNamespace:
    return SimpleNamespace(tree=tree, config=config, model=model, write_run=write_run)
