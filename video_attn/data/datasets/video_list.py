"""Generic video list: one ``relative/path label`` per line (space separated), paths relative to ``root``.

This is mmaction2's ``VideoDataset`` list format. Paths may contain spaces (the label is the last field).
"""

from __future__ import annotations

import os
from typing import Any

from .action_base import ActionDataset, AnnotationReport, VideoRecord, check_label, read_lines

__all__ = ["VideoListDataset", "read_video_list"]


def check_video_file(path: str, where: str, report: AnnotationReport) -> bool:
    """Missing and empty files are annotation problems found at construction (one ``stat`` each)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        report.add("missing files", where, path)
        return False
    if size == 0:
        report.add("empty files", where, path)
        return False
    return True


def read_video_list(ann_file: str, root: str = "", num_classes: int | None = None,
                    strict: bool = False, report: AnnotationReport | None = None) -> list[VideoRecord]:
    """Parse a video list; malformed lines, missing or empty files and labels outside
    ``[0, num_classes)`` are dropped and reported with ``file:line`` (``strict`` raises instead).
    ``report``: collects the dropped rows for the caller (e.g. ``tools/check_videos.py``)."""
    report = report or AnnotationReport(ann_file)
    records = []
    for line_no, line in read_lines(ann_file):
        report.num_rows += 1
        where = f"{ann_file}:{line_no}"
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            report.add("malformed lines", where, f"expected 'path label', got {line!r}")
            continue
        label = int(parts[1])
        if not check_label(label, num_classes, where, report):
            continue
        path = os.path.join(root, parts[0])
        if not check_video_file(path, where, report):
            continue
        records.append(VideoRecord(path=path, label=label, source=where))
    report.finish(records, strict)
    return records


class VideoListDataset(ActionDataset):
    """Videos from a generic list file (see :func:`read_video_list`); other args as :class:`ActionDataset`."""

    def __init__(self, ann_file: str, root: str, sampler: Any, transform: Any, num_classes: int | None = None,
                 strict: bool = False, **kwargs: Any) -> None:
        self.ann_file = ann_file
        super().__init__(read_video_list(ann_file, root, num_classes, strict), sampler, transform, **kwargs)
