"""Kinetics-400/600/700 from the official CSV files (``label,youtube_id,time_start,time_end,split``).

Videos are ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`` under ``root/<split dir>`` (the name of the
CSV's ``split`` column: train / val / validate / test; ``video_dir`` overrides it), flat or inside one
folder per class name (as the ActivityNet downloader writes them). Class indices are the sorted class names
(``class_names``, normally from the training CSV so that every split agrees). Kinetics always misses some
videos (deleted from YouTube): missing ones are counted and reported, never fatal, even with ``strict``.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from .action_base import ActionDataset, AnnotationReport, VideoRecord, check_label

__all__ = ["KineticsDataset", "find_kinetics_video", "kinetics_class_names", "read_kinetics_csv"]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm")
_SPLIT_DIR_ALIASES = {"validate": ("validate", "val"), "val": ("val", "validate")}


def _read_csv(ann_file: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        with open(ann_file, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            rows = []
            for row in reader:
                rows.append((reader.line_num, row))  # line_num: the line the row ended on
    except OSError as exc:
        raise FileNotFoundError(f"cannot read annotation file {ann_file}: {exc.strerror}") from None
    if not rows:
        raise ValueError(f"{ann_file}: empty annotation file")
    header = [h.strip() for h in rows[0][1]]
    missing = [c for c in ("label", "youtube_id", "time_start", "time_end") if c not in header]
    if missing:
        raise ValueError(f"{ann_file}:1: header lacks column(s) {missing}; expected "
                         "label,youtube_id,time_start,time_end,split")
    return header, rows[1:]


def kinetics_class_names(ann_file: str) -> list[str]:
    """Sorted distinct label names of a Kinetics CSV (the official class index order)."""
    header, rows = _read_csv(ann_file)
    col = header.index("label")
    return sorted({row[col].strip() for _, row in rows if len(row) == len(header) and row[col].strip()})


def find_kinetics_video(root: str, split_dir: str, label: str, name: str) -> str | None:
    """Path of video ``name`` (no extension) in ``root/split_dir`` or its class folder, None if absent."""
    for ext in VIDEO_EXTENSIONS:
        for folder in (os.path.join(root, split_dir), os.path.join(root, split_dir, label)):
            path = os.path.join(folder, name + ext)
            if os.path.exists(path):
                return path
    return None


def read_kinetics_csv(ann_file: str, root: str, class_names: list[str] | None = None,
                      num_classes: int | None = None, video_dir: str | None = None,
                      strict: bool = False, report: AnnotationReport | None = None) -> list[VideoRecord]:
    """Parse an official Kinetics CSV into records (rows whose video is missing are dropped and counted;
    ``report``: collects the dropped rows for the caller)."""
    header, rows = _read_csv(ann_file)
    if class_names is None:
        class_names = kinetics_class_names(ann_file)
    index = {name: i for i, name in enumerate(class_names)}
    col = {name: header.index(name) for name in header}
    report = report or AnnotationReport(ann_file)
    records = []
    split_dirs: dict[str, str] = {}
    for line_no, row in rows:
        if not row:
            continue
        report.num_rows += 1
        where = f"{ann_file}:{line_no}"
        if len(row) != len(header):
            report.add("malformed lines", where, f"expected {len(header)} fields, got {len(row)}")
            continue
        label_name, youtube_id = row[col["label"]].strip(), row[col["youtube_id"]].strip()
        try:
            start, end = int(float(row[col["time_start"]])), int(float(row[col["time_end"]]))
        except ValueError:
            report.add("malformed lines", where, f"bad time_start/time_end {row!r}")
            continue
        if label_name not in index:
            report.add("unknown class names", where, repr(label_name))
            continue
        if not check_label(index[label_name], num_classes, where, report):
            continue
        split = row[col["split"]].strip() if "split" in col else ""
        if video_dir is not None:
            folder = video_dir
        else:
            if split not in split_dirs:
                choices = _SPLIT_DIR_ALIASES.get(split, (split,))
                split_dirs[split] = next((c for c in choices if os.path.isdir(os.path.join(root, c))),
                                         choices[0])
            folder = split_dirs[split]
        name = f"{youtube_id}_{start:06d}_{end:06d}"
        path = find_kinetics_video(root, folder, label_name, name)
        if path is None:
            report.add("missing videos", where, os.path.join(root, folder, name + ".mp4"))
            continue
        if os.path.getsize(path) == 0:
            report.add("empty files", where, path)
            continue
        records.append(VideoRecord(path=path, label=index[label_name], source=where))
    fatal = ("malformed lines", "unknown class names", "labels out of range", "empty files")
    report.finish(records, strict, fatal_kinds=fatal)
    return records


class KineticsDataset(ActionDataset):
    """Kinetics videos from an official CSV (see :func:`read_kinetics_csv`); other args as ActionDataset."""

    def __init__(self, ann_file: str, root: str, sampler: Any, transform: Any,
                 class_names: list[str] | None = None, num_classes: int | None = None,
                 video_dir: str | None = None, strict: bool = False, **kwargs: Any) -> None:
        self.ann_file = ann_file
        self.class_names = class_names if class_names is not None else kinetics_class_names(ann_file)
        records = read_kinetics_csv(ann_file, root, self.class_names, num_classes, video_dir, strict)
        super().__init__(records, sampler, transform, **kwargs)
