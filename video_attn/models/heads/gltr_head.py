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
import torch.nn.functional as F
from torch import nn


def _batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    # BN statistics of a single sample are undefined (torch raises); use the running statistics instead.
    if bn.training and x.shape[0] == 1:
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return bn(x)


class GLTRHead(nn.Module):
    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.5, bn: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.bn = nn.BatchNorm1d(in_features) if bn else None
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
            x = self.relu(_batch_norm(self.bn, x))
        return self.classifier(self.dropout(x)), feature
