"""BNNeck head of the ReID "strong baseline" (Luo et al., "Bag of Tricks and A Strong Baseline for Deep
Person Re-identification", CVPRW 2019).

``feature -> BatchNorm1d (bias frozen at 0) -> Linear(C -> num_ids, bias=False)``. The triplet loss sees the
feature BEFORE the BN, cross-entropy the logits of the BN'ed feature, and the test embedding is the feature
AFTER the BN (the paper's "neck_feat = after"; ``test_feature="before"`` gives the other choice).
Init as the strong baseline: BN weight 1, bias 0 (not trained: it would shift the embedding off the sphere the
triplet loss shapes); classifier N(0, 0.001^2).

Train mode: ``(B, C) -> (logits (B, num_classes), feature (B, C) before BN)``;
eval mode: ``(B, C) -> (B, C)``.
"""

from __future__ import annotations

import torch
from torch import nn

from video_attn.models.norm import GuardedBatchNorm1d


class BNNeck(nn.Module):
    def __init__(self, in_features: int, num_classes: int, test_feature: str = "after") -> None:
        super().__init__()
        if test_feature not in ("after", "before"):
            raise ValueError(f"BNNeck test_feature={test_feature!r}; valid: 'after', 'before'")
        self.in_features = in_features
        self.num_classes = num_classes
        self.test_feature = test_feature
        self.bottleneck = GuardedBatchNorm1d(in_features)
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_features, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    @property
    def out_features(self) -> int:
        return self.in_features

    def forward(self, feature: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.bottleneck(feature) if self.test_feature == "after" else feature
        return self.classifier(self.bottleneck(feature)), feature
