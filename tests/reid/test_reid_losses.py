"""ReID losses against plain references written here."""

from __future__ import annotations

import math

import pytest
import torch

from video_attn.config.schema import Config
from video_attn.models.losses import (
    CenterLoss,
    CrossEntropyLabelSmooth,
    ReIDLoss,
    TripletLoss,
    build_reid_loss,
    pairwise_euclidean,
)


def ref_ce_ls(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> float:
    total = 0.0
    k = logits.shape[1]
    for row, y in zip(logits.tolist(), targets.tolist()):
        m = max(row)
        log_z = m + math.log(sum(math.exp(v - m) for v in row))
        for j, v in enumerate(row):
            q = (1 - eps) * (j == y) + eps / k
            total -= q * (v - log_z)
    return total / len(logits)


def ref_triplet(x: torch.Tensor, y: torch.Tensor, margin: float, soft: bool) -> float:
    n = len(x)
    losses = []
    for i in range(n):
        d = [
            math.sqrt(max(sum((a - b) ** 2 for a, b in zip(x[i].tolist(), x[j].tolist())), 1e-12))
            for j in range(n)
        ]
        pos = [d[j] for j in range(n) if y[j] == y[i]]
        neg = [d[j] for j in range(n) if y[j] != y[i]]
        if not neg:
            continue
        diff = max(pos) - min(neg)
        losses.append(math.log1p(math.exp(diff)) if soft else max(0.0, diff + margin))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_ce(eps: float) -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 5), torch.randint(0, 5, (6,))
    assert CrossEntropyLabelSmooth(eps)(logits, targets).item() == pytest.approx(
        ref_ce_ls(logits, targets, eps), rel=1e-5
    )
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLabelSmooth(1.0)


def test_pairwise_euclidean() -> None:
    x = torch.randn(5, 3)
    torch.testing.assert_close(pairwise_euclidean(x), torch.cdist(x, x).clamp(min=1e-6), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("soft", [False, True])
def test_batch_hard_triplet(soft: bool) -> None:
    torch.manual_seed(1)
    x = torch.randn(8, 4, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])  # id 3 has no positive but itself
    loss = TripletLoss(margin=0.3, soft_margin=soft)(x, y)
    # float32 expanded distances: the self-distance is ~1e-4 instead of 0
    assert loss.item() == pytest.approx(ref_triplet(x.detach(), y, 0.3, soft), rel=1e-4, abs=1e-4)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_triplet_without_negatives_is_zero_with_graph() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    loss = TripletLoss()(x, torch.zeros(4, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and torch.all(x.grad == 0)


def test_center_loss() -> None:
    torch.manual_seed(2)
    m = CenterLoss(3, 4)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    ref = sum(((x[i] - m.centers[y[i]]) ** 2).sum().item() for i in range(5)) / 5
    assert m(x, y).item() == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="size 4"):
        m(torch.randn(2, 3), y[:2])


def test_reid_loss_combines_parts() -> None:
    torch.manual_seed(3)
    logits, feats = torch.randn(6, 4), torch.randn(6, 5)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    only_ce = ReIDLoss()
    total, parts = only_ce(logits, feats, y)
    assert set(parts) == {"ce"} and total.item() == pytest.approx(ref_ce_ls(logits, y, 0.0), rel=1e-5)
    full = ReIDLoss(
        0.1, triplet_weight=2.0, triplet_margin=0.5, center_weight=0.01, num_classes=4, feat_dim=5
    )
    total, parts = full(logits, feats, y)
    assert set(parts) == {"ce", "triplet", "center"}
    expected = (
        ref_ce_ls(logits, y, 0.1) + 2.0 * ref_triplet(feats, y, 0.5, False) + 0.01 * parts["center"].item()
    )
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert all(not p.requires_grad for p in parts.values())
    assert [n for n, _ in full.named_parameters()] == ["center.centers"]  # the optimizer must include them
    with pytest.raises(ValueError, match="center_weight"):
        ReIDLoss(center_weight=1.0)


def test_build_from_config() -> None:
    cfg = Config()
    cfg.train.loss.label_smoothing = 0.1
    cfg.train.loss.triplet_weight = 1.0
    cfg.train.loss.triplet_soft_margin = True
    loss = build_reid_loss(cfg.train)
    assert loss.ce.label_smoothing == 0.1 and loss.triplet.soft_margin and loss.center is None
    assert build_reid_loss(cfg.train.loss).triplet is not None
