"""Models: attention ResNet backbones, temporal modules, action recognizers and ReID models.

``model.arch`` names the model and its temporal module; the valid names are the keys of the temporal module
registries (:mod:`video_attn.models.temporal.registry`): ``ACTION_ARCHS`` build a
:class:`~video_attn.models.recognizer.Recognizer`, ``REID_ARCHS`` a
:class:`~video_attn.models.reid_model.ReIDModel`.
"""

from __future__ import annotations

from torch import nn

from video_attn.config.schema import ModelConfig

from .temporal.registry import ACTION_TEMPORAL_MODULES, REID_TEMPORAL_MODULES

__all__ = ["ACTION_ARCHS", "REID_ARCHS", "build_model"]

ACTION_ARCHS: tuple[str, ...] = tuple(ACTION_TEMPORAL_MODULES)
REID_ARCHS: tuple[str, ...] = tuple(REID_TEMPORAL_MODULES)


def build_model(model_cfg: ModelConfig) -> nn.Module:
    """Build the model named by ``model_cfg.arch`` from the ``model`` section of a config."""
    if model_cfg.arch not in ACTION_ARCHS + REID_ARCHS:
        raise ValueError(
            f"model.arch={model_cfg.arch!r} is not a registered model; valid: action "
            f"{', '.join(ACTION_ARCHS)}; reid {', '.join(REID_ARCHS)}"
        )
    if model_cfg.num_classes is None:
        # training resolves it from the data (video_attn.tasks), evaluation from the checkpoint's config
        raise ValueError(
            "model.num_classes is not set: set it, or train (it is then taken from the training set) or "
            "load a checkpoint whose config holds it"
        )
    if model_cfg.arch in ACTION_ARCHS:
        from .recognizer import build_recognizer

        return build_recognizer(model_cfg)
    from .reid_model import build_reid_model

    return build_reid_model(model_cfg)
