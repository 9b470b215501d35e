"""BatchNorm layers that do not fail on one value per channel in training.

Batch statistics of a single value are undefined (PyTorch raises "Expected more than 1 value per channel");
this happens for pooled (B, C, 1, 1) vectors or (B, C) embeddings at batch size 1. In that case the layers
normalise with their running statistics and leave them unchanged, which is what they will do at test time.
State-dict keys and isinstance checks are those of ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _SingleValueGuard:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.track_running_stats and x.numel() == x.shape[1]:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class GuardedBatchNorm1d(_SingleValueGuard, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` for (B, C) inputs that also trains with B = 1 (see the module docstring)."""


class GuardedBatchNorm2d(_SingleValueGuard, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` for (B, C, H, W) inputs that also trains with B * H * W = 1."""
