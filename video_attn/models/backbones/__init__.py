"""Backbones: ResNet with pluggable attention (torchvision layout)."""

from .resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    build_backbone,
    load_pretrained,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
)

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "build_backbone",
    "load_pretrained",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
]
