"""``build_action_dataset(cfg, split, num_classes=...)``: the action dataset a config describes.

Reads ``cfg.data`` (format, root, backend, frame_template, labels_file, strict, max_decode_retries and the
split's ann_file / sampler / num_clips / crop), ``cfg.model.num_segments`` (clip length) and ``cfg.seed``.
Labels outside ``[0, num_classes)`` are dropped and reported with file:line (``num_classes=None``: only
negative labels are; training builds its set so and reports a wrong ``model.num_classes`` as an error).
Training (``split == "train"``) replaces undecodable videos; val / test flag them ``valid=False``.
An ``ann_file`` that is not found as given is looked up under ``data.root``.
The formats are the names of :data:`ACTION_DATASETS`; :data:`ACTION_FORMATS` lists them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..frame_sampling import build_frame_sampler
from ..transforms import build_clip_transform
from .action_base import ActionDataset, read_lines
from .frame_list import FrameListDataset
from .kinetics import KineticsDataset, kinetics_class_names
from .sthv2 import SthV2Dataset
from .video_list import VideoListDataset

__all__ = ["ACTION_DATASETS", "ACTION_FORMATS", "ACTION_SPLITS", "build_action_dataset"]

ACTION_SPLITS = ("train", "val", "test")


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


def _video_list(ann_file: str, data: Any, split: str, common: dict[str, Any]) -> ActionDataset:
    return VideoListDataset(ann_file, data.root, **common)


def _frame_list(ann_file: str, data: Any, split: str, common: dict[str, Any]) -> ActionDataset:
    return FrameListDataset(ann_file, data.root, **common)


def _kinetics(ann_file: str, data: Any, split: str, common: dict[str, Any]) -> ActionDataset:
    return KineticsDataset(ann_file, data.root, class_names=_kinetics_classes(data, split), **common)


def _sthv2(ann_file: str, data: Any, split: str, common: dict[str, Any]) -> ActionDataset:
    labels_file = _resolve(data.labels_file, data.root) if data.labels_file else None
    return SthV2Dataset(ann_file, data.root, labels_file=labels_file, **common)


# data.format -> builder(resolved ann_file, cfg.data, split, the dataset keyword arguments every format takes)
ACTION_DATASETS: dict[str, Callable[[str, Any, str, dict[str, Any]], ActionDataset]] = {
    "video_list": _video_list,
    "frame_list": _frame_list,
    "kinetics": _kinetics,
    "sthv2": _sthv2,
}
ACTION_FORMATS = tuple(ACTION_DATASETS)


def build_action_dataset(cfg: Any, split: str, *, num_classes: int | None) -> ActionDataset:
    """Dataset of ``split`` ("train" | "val" | "test") for an action config; see the module docstring.

    ``num_classes``: labels outside ``[0, num_classes)`` are dropped and reported; None keeps every label
    ``>= 0``.
    """
    if split not in ACTION_SPLITS:
        raise ValueError(f"unknown action split {split!r}; valid: {', '.join(ACTION_SPLITS)}")
    data = cfg.data
    if data.format not in ACTION_DATASETS:
        raise ValueError(
            f"data.format={data.format!r} is not an action format; valid: {', '.join(ACTION_FORMATS)}"
        )
    split_cfg = data[split]
    if not split_cfg.ann_file:
        raise ValueError(f"data.{split}.ann_file is not set")
    ann_file = _resolve(split_cfg.ann_file, data.root)
    train = split == "train"
    sampler = build_frame_sampler(split_cfg, data, cfg.model.num_segments, train)
    transform = build_clip_transform(data, split_cfg, train)
    common = dict(sampler=sampler, transform=transform, num_classes=num_classes, strict=data.strict,
                  backend=data.backend, replace_failed=train, max_retries=data.max_decode_retries,
                  seed=cfg.seed, frame_template=data.frame_template)
    return ACTION_DATASETS[data.format](ann_file, data, split, common)
