"""The ReID training objective: cross-entropy (optionally label-smoothed) + weighted batch-hard triplet +
weighted centre loss, configured by ``cfg.train.loss``.

``ReIDLoss(logits, features, targets) -> (total, parts)``; ``parts`` maps ``"ce"``, ``"triplet"``,
``"center"`` (the enabled ones) to detached scalars for logging. Defaults give the official GLTR objective
(cross-entropy only); the strong baseline is ``label_smoothing=0.1, triplet_weight=1, triplet_margin=0.3``.
"""

from __future__ import annotations

import torch
from torch import nn

from video_attn.config.schema import LossConfig, TrainConfig

from .center import CenterLoss
from .cross_entropy import CrossEntropyLabelSmooth
from .triplet import TripletLoss


class ReIDLoss(nn.Module):
    def __init__(
        self,
        label_smoothing: float = 0.0,
        triplet_weight: float = 0.0,
        triplet_margin: float = 0.3,
        triplet_soft_margin: bool = False,
        center_weight: float = 0.0,
        num_classes: int | None = None,
        feat_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.ce = CrossEntropyLabelSmooth(label_smoothing)
        self.triplet_weight = triplet_weight
        self.center_weight = center_weight
        self.triplet = TripletLoss(triplet_margin, triplet_soft_margin) if triplet_weight > 0 else None
        self.center = None
        if center_weight > 0:
            if num_classes is None or feat_dim is None:
                raise ValueError("train.loss.center_weight > 0 needs num_classes and feat_dim (centres)")
            self.center = CenterLoss(num_classes, feat_dim)

    def forward(
        self, logits: torch.Tensor, features: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = self.ce(logits, targets)
        parts = {"ce": ce.detach()}
        total = ce
        if self.triplet is not None:
            tri = self.triplet(features, targets)
            parts["triplet"] = tri.detach()
            total = total + self.triplet_weight * tri
        if self.center is not None:
            cen = self.center(features, targets)
            parts["center"] = cen.detach()
            total = total + self.center_weight * cen
        return total, parts


def build_reid_loss(
    train_cfg: TrainConfig | LossConfig, num_classes: int | None = None, feat_dim: int | None = None
) -> ReIDLoss:
    """Build :class:`ReIDLoss` from ``cfg.train`` (or ``cfg.train.loss``); the centre loss needs the sizes."""
    loss_cfg = train_cfg.loss if isinstance(train_cfg, TrainConfig) else train_cfg
    return ReIDLoss(
        label_smoothing=loss_cfg.label_smoothing,
        triplet_weight=loss_cfg.triplet_weight,
        triplet_margin=loss_cfg.triplet_margin,
        triplet_soft_margin=loss_cfg.triplet_soft_margin,
        center_weight=loss_cfg.center_weight,
        num_classes=num_classes,
        feat_dim=feat_dim,
    )
