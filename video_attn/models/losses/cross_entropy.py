"""Cross-entropy with label smoothing (Szegedy et al. 2016), as used by the ReID strong baseline.

``loss = mean_i sum_k -q_ik log p_ik`` with ``q = (1 - eps) onehot(y) + eps / K``. This is the formula of
torchreid's ``CrossEntropyLoss(label_smooth=True)`` and of ``F.cross_entropy(label_smoothing=eps)``.
Input logits ``(B, K)``, integer targets ``(B,)``; returns a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropyLabelSmooth(nn.Module):
    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
