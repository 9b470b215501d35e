"""ReID training head of the official GLTR code, also the plain linear head of the Gao & Nevatia baselines.

GLTR (Li et al., ICCV 2019; ljn114514/GLTR): ``BatchNorm1d(512) -> ReLU -> Dropout(0.5) -> Linear(512 ->
num_ids)``, trained with cross-entropy only. The test feature is the GLTR output BEFORE this head (the caller
L2-normalises it). With ``bn=False, dropout=0`` the head is the single ``Linear(C -> num_ids)`` of the
temporal pooling / attention / RNN baselines (Gao & Nevatia 2018), whose softmax and triplet losses both use
the head's input.

Train mode: ``(B, C) -> (logits (B, num_classes), feature (B, C))``, the feature being the head's input
(used by the triplet loss). Eval mode: ``(B, C) -> (B, C)`` unchanged. Framework-default init (the official
code does not re-initialise these layers).
"""

from __future__ import annotations

import torch
from torch import nn

from video_attn.models.norm import GuardedBatchNorm1d


class GLTRHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.5, bn: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.bn = GuardedBatchNorm1d(in_features) if bn else None
        self.relu = nn.ReLU(inplace=True) if bn else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(in_features, num_classes)

    @property
    def out_features(self) -> int:
        return self.in_features

    def forward(self, feature: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return feature
        x = feature
        if self.bn is not None:
            x = self.relu(self.bn(x))
        return self.classifier(self.dropout(x)), feature
