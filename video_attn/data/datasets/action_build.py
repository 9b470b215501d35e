"""``build_action_dataset(cfg, split, num_classes=...)``: the action dataset a config describes.

Reads ``cfg.data`` (format, root, backend, frame_template, labels_file, the flip pairs of
:func:`flip_label_map`, strict, max_decode_retries and the split's ann_file / sampler / num_clips / crop),
``cfg.model.num_segments`` (clip length) and ``cfg.seed``.
Labels outside ``[0, num_classes)`` are dropped and reported with file:line (``num_classes=None``: only
negative labels are; training builds its set so and reports a wrong ``model.num_classes`` as an error).
Training (``split == "train"``) replaces undecodable videos; val / test flag them ``valid=False``.
An ``ann_file`` that is not found as given is looked up under ``data.root``.
The formats are the names of :data:`ACTION_DATASETS`; :data:`ACTION_FORMATS` lists them.

Class names (:func:`action_class_names`): ``data.labels_file`` when set (kinetics, video_list, frame_list: a
text file, line ``i + 1`` names class ``i``; sthv2: the official labels JSON); otherwise the official files
of kinetics (sorted label names of the training CSV) and sthv2 (the labels JSON next to the lists); otherwise
the class indices ``"0"``, ``"1"``, ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ..frame_sampling import build_frame_sampler
from ..transforms import build_clip_transform
from .action_base import ActionDataset, read_class_names, read_lines
from .frame_list import FrameListDataset
from .kinetics import KineticsDataset, kinetics_class_names
from .sthv2 import LABELS_FILE_NAME, SthV2Dataset, sthv2_class_names
from .video_list import VideoListDataset

__all__ = [
    "ACTION_DATASETS",
    "ACTION_FORMATS",
    "ACTION_SPLITS",
    "action_class_names",
    "action_num_classes",
    "build_action_dataset",
    "class_names_file",
    "flip_label_map",
]

ACTION_SPLITS = ("train", "val", "test")


def _resolve(path: str, root: str) -> str:
    if os.path.exists(path) or os.path.isabs(path):
        return path
    under_root = os.path.join(root, path)
    return under_root if os.path.exists(under_root) else path


def class_names_file(data: Any) -> str | None:
    """The file that names the classes of ``cfg.data`` (see the module docstring), None when there is none.

    ``data.labels_file`` is returned even when it does not exist (reading it then names it in the error);
    the official kinetics / sthv2 files are looked for next to the train, val and test lists, in that order.
    """
    if data.labels_file:
        return _resolve(data.labels_file, data.root)
    if data.format not in ("kinetics", "sthv2"):
        return None
    for split in ACTION_SPLITS:
        path = data[split].ann_file
        if not path:
            continue
        if data.format == "sthv2":
            path = os.path.join(os.path.dirname(path), LABELS_FILE_NAME)
        path = _resolve(path, data.root)
        if os.path.isfile(path):
            return path
    return None


def _read_names(data: Any, path: str) -> list[str]:
    if data.format == "sthv2":
        return sthv2_class_names(path)
    if data.format == "kinetics" and not data.labels_file:
        return kinetics_class_names(path)  # an official CSV
    return read_class_names(path)


def action_class_names(cfg: Any, num_classes: int) -> list[str]:
    """The names of classes ``0 .. num_classes - 1`` of an action config (see the module docstring).

    A names file whose length is not ``num_classes`` is a ``ValueError`` naming the file.
    """
    path = class_names_file(cfg.data)
    if path is None:
        return [str(i) for i in range(num_classes)]
    names = _read_names(cfg.data, path)
    if len(names) != num_classes:
        raise ValueError(f"{path} names {len(names)} classes but model.num_classes={num_classes}")
    return names


def action_num_classes(cfg: Any, labels: Sequence[int]) -> int:
    """The class count the training data implies: the length of the names file (see
    :func:`class_names_file`) when there is one, else the largest training label + 1."""
    path = class_names_file(cfg.data)
    if path is not None:
        return len(_read_names(cfg.data, path))
    if len(labels) == 0:
        raise ValueError("cannot infer model.num_classes from an empty training set")
    return int(max(labels)) + 1


def _kinetics_classes(data: Any, split: str) -> list[str]:
    path = class_names_file(data)
    if path is not None:
        return _read_names(data, path)
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


def flip_label_map(data: Any) -> dict[int, int]:
    """The label pairs the training flip swaps: ``data.flip_label_map``, or the pairs of
    ``data.flip_pairs_file`` (one ``a b`` pair of class indices a line, ``#`` comments; looked up under
    ``data.root`` when not found as given). A missing or malformed file is an error naming it."""
    if not data.flip_pairs_file:
        return dict(data.flip_label_map)
    path = _resolve(data.flip_pairs_file, data.root)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"data.flip_pairs_file {data.flip_pairs_file} not found (nor under data.root {data.root}); the "
            "flip pairs belong to the dataset that ships them: for data without any, set "
            "data.flip_pairs_file=null"
        )
    pairs = {}
    for line_no, line in read_lines(path):
        fields = line.split()
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise ValueError(f"{path}:{line_no}: expected two class indices 'a b', got {line!r}")
        pairs[int(fields[0])] = int(fields[1])
    return pairs


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
    transform = build_clip_transform(data, split_cfg, train, flip_label_map=flip_label_map(data))
    common = dict(sampler=sampler, transform=transform, num_classes=num_classes, strict=data.strict,
                  backend=data.backend, replace_failed=train, max_retries=data.max_decode_retries,
                  seed=cfg.seed, frame_template=data.frame_template, decode_device=data.decode_device)
    return ACTION_DATASETS[data.format](ann_file, data, split, common)
