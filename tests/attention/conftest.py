"""Shared fixtures for the attention-gate and ResNet tests (tiny tensors: the CPU is shared)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def feature_map() -> torch.Tensor:
    """(B=2, C=32, 6, 5): non-square so H/W mix-ups show."""
    return torch.randn(2, 32, 6, 5)
