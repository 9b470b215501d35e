"""Batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss", 2017).

For each anchor i of the batch: ``d_ap = max_{j: y_j = y_i} ||f_i - f_j||``, ``d_an = min_{j: y_j != y_i}
||f_i - f_j||`` (Euclidean, on the feature BEFORE the BNNeck); loss = mean over anchors of
``max(0, d_ap - d_an + margin)`` (hinge, torchreid default margin 0.3) or ``log(1 + exp(d_ap - d_an))``
(``soft_margin=True``). Anchors without any negative in the batch (a batch of one identity) are left out;
if none is left the loss is 0 (with a graph, so backward still works).
Input features ``(B, D)``, targets ``(B,)``; returns a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """``(B, D) -> (B, B)`` Euclidean distances; clamped before the sqrt so the diagonal has zero gradient."""
    sq = x.pow(2).sum(dim=1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * (x @ x.t())
    return d2.clamp(min=1e-12).sqrt()


class TripletLoss(nn.Module):
    def __init__(self, margin: float = 0.3, soft_margin: bool = False) -> None:
        super().__init__()
        self.margin = margin
        self.soft_margin = soft_margin

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        dist = pairwise_euclidean(features.float())
        same = targets.unsqueeze(0) == targets.unsqueeze(1)
        # -inf / +inf fill keeps other identities out of the max and the same identity out of the min
        d_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
        d_an = dist.masked_fill(same, float("inf")).min(dim=1).values
        valid = torch.isfinite(d_an)
        if not bool(valid.any()):
            return features.sum() * 0.0
        d_ap, d_an = d_ap[valid], d_an[valid]
        if self.soft_margin:
            return F.softplus(d_ap - d_an).mean()
        return F.relu(d_ap - d_an + self.margin).mean()
