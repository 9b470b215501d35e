"""``build_action_dataset(cfg, split)``: the action dataset a config describes.

Reads ``cfg.data`` (format, root, backend, frame_template, labels_file, strict, max_decode_retries and the
split's ann_file / sampler / num_clips / crop), ``cfg.model.num_segments`` (clip length),
``cfg.model.num_classes`` (labels outside the range are reported with file:line) and ``cfg.seed``.
Training (``split == "train"``) replaces undecodable videos; val / test flag them ``valid=False``.
An ``ann_file`` that is not found as given is looked up under ``data.root``.
"""

from __future__ import annotations

import os
from typing import Any

from ..sampling import build_sampler
from ..transforms import build_clip_transform
from .action_base import ActionDataset, read_lines
from .frame_list import FrameListDataset
from .kinetics import KineticsDataset, kinetics_class_names
from .sthv2 import SthV2Dataset
from .video_list import VideoListDataset

__all__ = ["ACTION_FORMATS", "build_action_dataset"]

ACTION_FORMATS = ("video_list", "frame_list", "kinetics", "sthv2")
SPLITS = ("train", "val", "test")


def _resolve(path: str, root: str) -> str:
    if os.path.exists(path) or os.path.isabs(path):
        return path
    under_root = os.path.join(root, path)
    return under_root if os.path.exists(under_root) else path


def _kinetics_classes(data: Any, split: str) -> list[str]:
    if data.labels_file:
        names = [line for _, line in read_lines(_resolve(data.labels_file, data.root))]
        if len(set(names)) != len(names):
            raise ValueError(f"data.labels_file {data.labels_file}: duplicate class names")
        return names
    train_csv = data.train.ann_file
    if train_csv and os.path.exists(_resolve(train_csv, data.root)):
        return kinetics_class_names(_resolve(train_csv, data.root))
    return kinetics_class_names(_resolve(data[split].ann_file, data.root))


def build_action_dataset(cfg: Any, split: str) -> ActionDataset:
    """Dataset of ``split`` ("train" | "val" | "test") for an action config; see the module docstring."""
    if split not in SPLITS:
        raise ValueError(f"unknown action split {split!r}; valid: {', '.join(SPLITS)}")
    data = cfg.data
    if data.format not in ACTION_FORMATS:
        raise ValueError(f"data.format={data.format!r} is not an action format; valid: "
                         f"{', '.join(ACTION_FORMATS)} (ReID formats: video_attn.data.datasets.reid_build)")
    split_cfg = data[split]
    if not split_cfg.ann_file:
        raise ValueError(f"data.{split}.ann_file is not set")
    ann_file = _resolve(split_cfg.ann_file, data.root)
    train = split == "train"
    sampler = build_sampler(split_cfg, data, cfg.model.num_segments, train)
    transform = build_clip_transform(data, split_cfg, train)
    common = dict(sampler=sampler, transform=transform, num_classes=cfg.model.num_classes, strict=data.strict,
                  backend=data.backend, replace_failed=train, max_retries=data.max_decode_retries,
                  seed=cfg.seed, frame_template=data.frame_template)
    if data.format == "video_list":
        return VideoListDataset(ann_file, data.root, **common)
    if data.format == "frame_list":
        return FrameListDataset(ann_file, data.root, **common)
    if data.format == "kinetics":
        return KineticsDataset(ann_file, data.root, class_names=_kinetics_classes(data, split), **common)
    labels_file = _resolve(data.labels_file, data.root) if data.labels_file else None
    return SthV2Dataset(ann_file, data.root, labels_file=labels_file, **common)
