"""Frame-folder list: one ``relative/dir num_frames label`` per line (TSN / TSM / TANet, mmaction2 rawframes).

Frames inside a folder are named by ``frame_template`` (``img_00001.jpg`` ... by default, 1-based).
"""

from __future__ import annotations

import os
from typing import Any

from .action_base import ActionDataset, AnnotationReport, VideoRecord, check_label, read_lines

__all__ = ["FrameListDataset", "read_frame_list"]


def read_frame_list(ann_file: str, root: str = "", num_classes: int | None = None,
                    strict: bool = False, report: AnnotationReport | None = None) -> list[VideoRecord]:
    """Parse a frame-folder list; malformed lines, missing folders, non-positive frame counts and labels
    outside ``[0, num_classes)`` are dropped and reported with ``file:line`` (``strict`` raises instead).
    ``report``: collects the dropped rows for the caller."""
    report = report or AnnotationReport(ann_file)
    records = []
    for line_no, line in read_lines(ann_file):
        report.num_rows += 1
        where = f"{ann_file}:{line_no}"
        parts = line.rsplit(maxsplit=2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].lstrip("-").isdigit():
            report.add("malformed lines", where, f"expected 'dir num_frames label', got {line!r}")
            continue
        num_frames, label = int(parts[1]), int(parts[2])
        if num_frames < 1:
            report.add("malformed lines", where, f"num_frames must be positive, got {num_frames}")
            continue
        if not check_label(label, num_classes, where, report):
            continue
        path = os.path.join(root, parts[0])
        if not os.path.isdir(path):
            report.add("missing folders", where, path)
            continue
        records.append(VideoRecord(path=path, label=label, num_frames=num_frames, source=where))
    report.finish(records, strict)
    return records


class FrameListDataset(ActionDataset):
    """Frame folders from a list file (see :func:`read_frame_list`); other args as :class:`ActionDataset`."""

    def __init__(self, ann_file: str, root: str, sampler: Any, transform: Any, num_classes: int | None = None,
                 strict: bool = False, **kwargs: Any) -> None:
        self.ann_file = ann_file
        super().__init__(read_frame_list(ann_file, root, num_classes, strict), sampler, transform, **kwargs)
