"""Something-Something V2 from its official JSON files.

``something-something-v2-labels.json`` maps each template name (without brackets) to its class index (as a
string); ``something-something-v2-{train,validation}.json`` list ``{"id", "label", "template",
"placeholders"}`` items. As in the official loader, an item's class is its ``template`` with the brackets
removed (``"Putting [something] on [something]"`` -> ``"Putting something on something"``), not its
``label`` (which has the objects filled in). Videos are ``<id>.webm`` under ``root``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .action_base import ActionDataset, AnnotationReport, VideoRecord, check_label
from .video_list import check_video_file

__all__ = ["LABELS_FILE_NAME", "SthV2Dataset", "read_sthv2_json", "read_sthv2_labels", "sthv2_class_names"]

LABELS_FILE_NAME = "something-something-v2-labels.json"


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise FileNotFoundError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def read_sthv2_labels(labels_file: str) -> dict[str, int]:
    """Template name -> class index, from the official labels JSON."""
    data = _load_json(labels_file)
    if not isinstance(data, dict):
        raise ValueError(f"{labels_file}: expected an object mapping template names to indices")
    try:
        return {str(name): int(idx) for name, idx in data.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{labels_file}: class indices must be integers ({exc})") from None


def sthv2_class_names(labels_file: str) -> list[str]:
    """Class names in index order, from the official labels JSON (its indices must be 0..K-1, once each)."""
    labels = read_sthv2_labels(labels_file)
    names = sorted(labels, key=labels.__getitem__)
    if [labels[name] for name in names] != list(range(len(names))):
        raise ValueError(f"{labels_file}: class indices must be 0..{len(names) - 1}, each used once")
    return names


def template_to_class(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def read_sthv2_json(ann_file: str, root: str, labels: dict[str, int], num_classes: int | None = None,
                    video_ext: str = ".webm", strict: bool = False, report: AnnotationReport | None = None
                    ) -> list[VideoRecord]:
    """Parse an official SSv2 split JSON; bad items are reported as ``file:item<i>`` and dropped
    (``report``: collects them for the caller)."""
    items = _load_json(ann_file)
    if not isinstance(items, list):
        raise ValueError(f"{ann_file}: expected a JSON list of videos")
    report = report or AnnotationReport(ann_file)
    records = []
    for i, item in enumerate(items):
        report.num_rows += 1
        where = f"{ann_file}:item{i}"
        if not isinstance(item, dict) or "id" not in item:
            report.add("malformed items", where, f"expected an object with 'id', got {str(item)[:80]!r}")
            continue
        if "template" not in item:
            report.add("malformed items", where, f"video {item['id']} has no 'template' (unlabelled?)")
            continue
        name = template_to_class(str(item["template"]))
        if name not in labels:
            report.add("unknown templates", where, repr(name))
            continue
        label = labels[name]
        if not check_label(label, num_classes, where, report):
            continue
        path = os.path.join(root, f"{item['id']}{video_ext}")
        if not check_video_file(path, where, report):
            continue
        records.append(VideoRecord(path=path, label=label, source=where))
    report.finish(records, strict)
    return records


class SthV2Dataset(ActionDataset):
    """SSv2 videos (see :func:`read_sthv2_json`); ``labels_file`` defaults to the official labels JSON next
    to ``ann_file``. Other args as :class:`ActionDataset`."""

    def __init__(self, ann_file: str, root: str, sampler: Any, transform: Any, labels_file: str | None = None,
                 num_classes: int | None = None, video_ext: str = ".webm", strict: bool = False,
                 **kwargs: Any) -> None:
        self.ann_file = ann_file
        if labels_file is None:
            labels_file = os.path.join(os.path.dirname(ann_file), LABELS_FILE_NAME)
        self.class_to_index = read_sthv2_labels(labels_file)
        records = read_sthv2_json(ann_file, root, self.class_to_index, num_classes, video_ext, strict)
        super().__init__(records, sampler, transform, **kwargs)
