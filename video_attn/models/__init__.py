"""Models: attention ResNet backbones, temporal modules, action recognizers and ReID models."""

from __future__ import annotations

from torch import nn

from video_attn.config.schema import ModelConfig

ACTION_ARCHS = ("tsn", "tsm", "tanet")
REID_ARCHS = ("gltr", "temporal_pool", "temporal_attention", "gru")


def build_model(model_cfg: ModelConfig) -> nn.Module:
    """Build the model named by ``model_cfg.arch`` from the ``model`` section of a config."""
    if model_cfg.arch in ACTION_ARCHS:
        from .recognizer import build_recognizer

        return build_recognizer(model_cfg)
    if model_cfg.arch in REID_ARCHS:
        from .reid_model import build_reid_model

        return build_reid_model(model_cfg)
    raise ValueError(f"model.arch={model_cfg.arch!r}; valid: {', '.join(ACTION_ARCHS + REID_ARCHS)}")
