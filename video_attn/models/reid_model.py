"""Video person ReID model: per-frame ResNet -> temporal module -> head.

Architectures (``model.arch``):

* ``gltr`` - GLTR (Li et al., ICCV 2019): ResNet-50 with last stride 1, frame embedding + DTP + TSA, mean
  over T -> 512-d; official head BN-ReLU-Dropout-FC (``model.head: gltr``); test feature = GLTR output.
* ``temporal_pool`` / ``temporal_attention`` / ``gru`` - the baselines of Gao & Nevatia 2018 (temporal
  average pooling, temporal attention pooling, recurrent aggregation), official head a single Linear
  (``model.head: linear``).
* any of them with ``model.head: bnneck`` - the strong-baseline BNNeck (triplet on the feature before the BN,
  CE and test embedding after it).

The temporal module's options are ``model.temporal_kwargs``, its constructor arguments (e.g. GLTR
``embed_dim``, ``dilations``; TemporalAttentionPool ``spatial_kernel``; RecurrentPool ``cell``,
``hidden_dim``).

``forward(x)`` with ``x`` of shape ``(N, T, 3, H, W)``:
train mode -> ``(logits (N, num_classes), feature (N, D))`` (the feature feeds the triplet loss);
eval mode -> embedding ``(N, D)``. In eval mode the backbone runs on at most ``frame_chunk`` frames at a time
(memory stays bounded for whole tracklets, T up to 920 on MARS) and the temporal module sees the whole
sequence; the result equals one pass because eval-mode BN is per-sample. Multi-clip test items
``(N, V, T, 3, H, W)`` are the engine's to average (one call per view or flattened into N).
"""

from __future__ import annotations

import torch
from torch import nn

from video_attn.config.schema import ModelConfig

from .heads.bnneck import BNNeck
from .heads.gltr_head import GLTRHead
from .temporal.registry import REID_TEMPORAL_MODULES, build_temporal_module


class ReIDModel(nn.Module):
    """Backbone (``forward_features``: (M, 3, H, W) -> (M, C, h, w)), temporal module, head.

    The temporal module maps ``(N, T, C')`` to ``(N, D)``; if it has ``frame_features(maps)`` that gives the
    per-frame vectors ``(M, C')`` from the spatial maps, otherwise global average pooling is used.
    """

    def __init__(
        self, backbone: nn.Module, temporal: nn.Module, head: nn.Module, frame_chunk: int = 64
    ) -> None:
        super().__init__()
        if frame_chunk < 1:
            raise ValueError(f"model.frame_chunk must be >= 1, got {frame_chunk}")
        self.backbone = backbone
        self.temporal = temporal
        self.head = head
        self.frame_chunk = frame_chunk

    @property
    def classifier(self) -> nn.Linear:
        """The final Linear (identity logits); the engine gives it the fc learning-rate multiplier."""
        return self.head.classifier

    @property
    def feat_dim(self) -> int:
        """Size of the feature given to the triplet / centre loss and of the test embedding."""
        return self.head.out_features

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``(M, 3, H, W) -> (M, C')`` per-frame vectors for the temporal module."""
        maps = self.backbone.forward_features(frames)
        per_frame = getattr(self.temporal, "frame_features", None)
        return per_frame(maps) if per_frame is not None else maps.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 5:
            raise ValueError(f"ReIDModel expects a clip batch (N, T, 3, H, W), got shape {tuple(x.shape)}")
        n, t = x.shape[:2]
        frames = x.flatten(0, 1)
        if self.training:
            feats = self.frame_features(frames)
        else:
            feats = torch.cat([self.frame_features(c) for c in frames.split(self.frame_chunk)], dim=0)
        return self.head(self.temporal(feats.view(n, t, -1)))


def build_temporal(model_cfg: ModelConfig, in_channels: int) -> nn.Module:
    """The temporal module of ReID arch ``model_cfg.arch`` for ``in_channels``-d frame features, with the
    options of ``model_cfg.temporal_kwargs`` (official defaults when absent)."""
    module_cls = REID_TEMPORAL_MODULES.get(model_cfg.arch)
    if module_cls is None:
        raise ValueError(
            f"model.arch={model_cfg.arch!r} is not a ReID arch; valid: {', '.join(REID_TEMPORAL_MODULES)}"
        )
    kwargs = model_cfg.temporal_kwargs
    return build_temporal_module(model_cfg.arch, module_cls, kwargs, in_channels=in_channels)


def build_head(model_cfg: ModelConfig, in_features: int) -> nn.Module:
    if model_cfg.num_classes < 1:
        raise ValueError(f"model.num_classes (training identities) must be >= 1, got {model_cfg.num_classes}")
    if model_cfg.head == "gltr":
        return GLTRHead(in_features, model_cfg.num_classes, dropout=model_cfg.dropout)
    if model_cfg.head == "linear":
        return GLTRHead(in_features, model_cfg.num_classes, dropout=0.0, bn=False)
    if model_cfg.head == "bnneck":
        return BNNeck(in_features, model_cfg.num_classes, test_feature=model_cfg.neck_feat)
    raise ValueError(f"model.head={model_cfg.head!r}; valid: gltr, linear, bnneck")


def build_reid_model(model_cfg: ModelConfig) -> ReIDModel:
    """Build a :class:`ReIDModel` from the ``model`` section (``model.num_classes`` = training identities)."""
    from .backbones.resnet import build_backbone

    backbone = build_backbone(model_cfg.backbone)
    temporal = build_temporal(model_cfg, backbone.num_features)
    head = build_head(model_cfg, temporal.out_channels)
    return ReIDModel(backbone, temporal, head, frame_chunk=model_cfg.frame_chunk)
