"""Centre loss (Wen et al., "A Discriminative Feature Learning Approach for Deep Face Recognition", 2016).

``loss = mean_i ||f_i - c_{y_i}||^2`` with learnable centres ``c`` of shape (num_classes, feat_dim)
initialised N(0, 1) (torchreid / strong baseline; each squared distance clamped to [1e-12, 1e12]).
The centres are parameters of this module: the optimizer must include them (the strong baseline uses a
separate SGD with lr 0.5 for them, and scales their gradient by 1 / center_weight).
"""

from __future__ import annotations

import torch
from torch import nn


class CenterLoss(nn.Module):
    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feat_dim = feat_dim
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.feat_dim:
            raise ValueError(f"CenterLoss expects features of size {self.feat_dim}, got {features.shape[1]}")
        diff = features.float() - self.centers[targets]
        return diff.pow(2).sum(dim=1).clamp(min=1e-12, max=1e12).mean()
