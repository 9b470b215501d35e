"""The synthetic action data needs temporal modelling: a tiny 3D CNN learns it, a frame-averaging 2D CNN of
the same size cannot (a single frame carries no class information). Slow (about 2 CPU minutes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from video_attn.data.datasets.video_list import VideoListDataset
from video_attn.data.frame_sampling import SegmentSampler
from video_attn.data.synthetic.action import make_action_dataset
from video_attn.data.transforms import ClipTransform, Normalize, Resize


class TinyTemporal(nn.Module):
    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 16, (3, 5, 5), padding=(1, 2, 2), stride=(1, 2, 2))
        self.conv2 = nn.Conv3d(16, 32, 3, padding=1, stride=(1, 2, 2))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, 3, H, W)
        x = F.relu(self.conv1(x.permute(0, 2, 1, 3, 4)))
        return self.fc(F.relu(self.conv2(x)).mean((2, 3, 4)))


class TinyFrameAverage(nn.Module):
    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 5, padding=2, stride=2)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, stride=2)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        x = F.relu(self.conv2(F.relu(self.conv1(x.flatten(0, 1)))))
        return self.fc(x.mean((2, 3))).view(n, t, -1).mean(1)  # TSN consensus: average over frames


def load_split(root, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    transform = ClipTransform([Resize(32), Normalize()], output_size=(32, 32))
    ds = VideoListDataset(str(root / f"{split}.txt"), str(root), SegmentSampler(8, "center"), transform,
                          replace_failed=False)
    items = [ds[i] for i in range(len(ds))]
    assert all(item["valid"] for item in items)
    return torch.stack([item["clip"] for item in items]), torch.tensor([item["label"] for item in items])


def train_and_eval(model: nn.Module, train, val, epochs: int = 40) -> float:
    x, y = train
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return (model(val[0]).argmax(1) == val[1]).float().mean().item()


@pytest.mark.slow
def test_temporal_model_learns_and_frame_average_stays_at_chance(tmp_path):
    make_action_dataset(tmp_path, seed=0, train_per_class=48)  # 4 classes, 192 train / 64 val
    train, val = load_split(tmp_path, "train"), load_split(tmp_path, "val")
    torch.manual_seed(0)
    temporal = train_and_eval(TinyTemporal(), train, val)
    torch.manual_seed(0)
    frame_average = train_and_eval(TinyFrameAverage(), train, val)
    assert temporal >= 0.9
    assert frame_average <= 0.45  # chance is 0.25; 64 val clips
