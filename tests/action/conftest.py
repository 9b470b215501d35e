"""Shared helpers of the action tests: tiny model configs."""

from __future__ import annotations

import pytest
import torch

from video_attn.config.schema import BackboneConfig, ModelConfig


def tiny_model_cfg(
    arch: str = "tanet",
    depth: int = 18,
    base_width: int = 8,
    num_classes: int = 4,
    num_segments: int = 4,
    stages: tuple[int, ...] = (1, 2, 3, 4),
    every: int = 1,
    **temporal_kwargs,
) -> ModelConfig:
    return ModelConfig(
        arch=arch,
        num_classes=num_classes,
        num_segments=num_segments,
        backbone=BackboneConfig(depth=depth, base_width=base_width),
        temporal_kwargs=temporal_kwargs,
        temporal_stages=list(stages),
        temporal_every=every,
    )


@pytest.fixture
def make_model_cfg():
    return tiny_model_cfg


@pytest.fixture(autouse=True)
def _single_thread():
    """One intra-op thread: on the shared 2-core machine, 2 OpenMP threads under load spin-wait and make
    tiny convolutions 50-100x slower (measured: 10 s vs 0.08 s for a tiny TANet step)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
