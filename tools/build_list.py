#!/usr/bin/env python3
"""Write the annotation lists of a dataset: a class-folder tree or an official Kinetics CSV.

    python tools/build_list.py tree ROOT [--out-dir DIR] [--name NAME] [--val-fraction F --seed S]
    python tools/build_list.py tree ROOT --frames [--frame-template img_{:05d}.jpg] [...]
    python tools/build_list.py kinetics CSV --root ROOT [--out LIST] [--classes-from TRAIN_CSV]

tree: ``ROOT/<class>/.../<video>`` (or, with ``--frames``, ``ROOT/<class>/.../<frame folder>/img_00001.jpg``)
to a ``video_list`` (``path label`` lines) or ``frame_list`` (``dir num_frames label`` lines) with paths
relative to ROOT (use ROOT as ``data.root``), and ``DIR/classes.txt``: the class folder names, sorted, one a
line (``data.labels_file``; line ``i + 1`` names class ``i``). Without a split the list is ``DIR/NAME.txt``
(default ``list.txt``); ``--val-fraction F`` writes ``DIR/train.txt`` and ``DIR/val.txt`` instead, each
class giving ``round(F x n)`` of its ``n`` items to val (at least 1 when F > 0 and n >= 2, never all of
them), chosen by ``--seed`` (the same seed gives the same split; a class's split does not depend on the
other classes). Names starting with ``.`` are skipped (the unfinished outputs of resize_videos.py and
extract_frames.py). DIR defaults to ROOT.

kinetics: the official CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``) to a ``video_list`` of
the videos found under ROOT (found exactly as the ``kinetics`` data format finds them, flat or in class
folders, .mp4 / .mkv / .webm), labelled by the sorted class names of the CSV (the official order the
kinetics loader uses; ``--classes-from`` takes them from the training CSV or a labels file instead, so
that val and train agree), the labels file next to it, and ``LIST_STEM.missing.txt``: one ``csv:line
expected/path`` per row whose video is missing (Kinetics always misses some). LIST defaults to
``ROOT/<csv stem>.txt``.

Exit status: 0 on success (missing Kinetics videos included), 1 with a one-line error naming the file on
bad input (missing root, no class folders, no videos, a CSV without a required column).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Iterator
from typing import NamedTuple

from tqdm import tqdm

_LOGGER = logging.getLogger("build_list")

# what the tree scan (and resize_videos.py / extract_frames.py) counts as a video file
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp")


class Entry(NamedTuple):
    """One list line: a path relative to the root, its label, and (frame folders) its frame count."""

    path: str
    label: int
    num_frames: int | None = None

    def line(self) -> str:
        if self.num_frames is None:
            return f"{self.path} {self.label}"
        return f"{self.path} {self.num_frames} {self.label}"


def is_video(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS)


def walk_sorted(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` in sorted order, skipping hidden folders (``.name``: unfinished outputs)."""
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield folder, dirs, sorted(files)


def find_videos(root: str) -> list[str]:
    """Paths relative to ``root`` (``/``-separated, sorted) of every video file under it."""
    found = []
    for folder, _, files in walk_sorted(root):
        rel = os.path.relpath(folder, root)
        for name in files:
            if is_video(name):
                found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return found


def count_frames(folder: str, template: str) -> int:
    """Frames of a frame folder, counted the way the ``frame_list`` reader counts them (0 when none)."""
    from video_attn.data.decoders import DecodeError, FrameFolderReader

    try:
        return len(FrameFolderReader(folder, template=template))
    except DecodeError:
        return 0


def find_frame_folders(root: str, template: str) -> list[tuple[str, int]]:
    """(path relative to ``root``, frame count) of every folder under ``root`` holding a first frame."""
    first = template.format(1)
    found = []
    for folder, _, files in walk_sorted(root):
        if first in files:
            rel = os.path.relpath(folder, root).replace(os.sep, "/")
            found.append((rel, count_frames(folder, template)))
    return found


def scan_class_tree(root: str, frames: bool = False, template: str = "img_{:05d}.jpg",
                    progress: bool = True) -> tuple[list[str], dict[str, list[Entry]]]:
    """Sorted class names (the folders of ``root``) and each class's entries (paths relative to ``root``).

    Raises ``FileNotFoundError`` / ``ValueError`` (one line, naming ``root``) for a missing root, a root
    without class folders, or a tree without a single video (frame folder).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such directory")
    classes = sorted(d for d in os.listdir(root)
                     if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"{root}: no class folders (expected ROOT/<class>/<video>)")
    entries: dict[str, list[Entry]] = {}
    for label, name in enumerate(tqdm(classes, desc="scanning", unit="class", disable=not progress,
                                      file=sys.stderr)):
        top = os.path.join(root, name)
        if frames:
            items = [Entry(f"{name}/{rel}" if rel != "." else name, label, count)
                     for rel, count in find_frame_folders(top, template)]
            empty = [e.path for e in items if not e.num_frames]
            if empty:
                _LOGGER.warning("%s: skipping %d frame folder(s) without consecutive frames: %s", root,
                                len(empty), ", ".join(empty[:3]) + (" ..." if len(empty) > 3 else ""))
            items = [e for e in items if e.num_frames]
        else:
            items = [Entry(f"{name}/{rel}", label) for rel in find_videos(top)]
        if not items:
            _LOGGER.warning("%s: class folder %r holds no %s (its index is kept)", root, name,
                            "frame folders" if frames else "videos")
        entries[name] = items
    if not any(entries.values()):
        what = f"frame folders (first frame {template.format(1)!r})" if frames else \
            f"videos ({', '.join(VIDEO_EXTENSIONS)})"
        raise ValueError(f"{root}: no {what} under its {len(classes)} class folders")
    return classes, entries


def split_entries(entries: dict[str, list[Entry]], val_fraction: float, seed: int
                  ) -> tuple[list[Entry], list[Entry]]:
    """Stratified train / val split (see the module docstring); deterministic for a seed."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for name, items in entries.items():
        items = sorted(items, key=lambda e: e.path)
        random.Random(f"{seed}/{name}").shuffle(items)  # str seeds are stable across runs and platforms
        n_val = round(val_fraction * len(items))
        if val_fraction > 0 and len(items) >= 2:
            n_val = min(max(n_val, 1), len(items) - 1)
        else:
            n_val = 0
        val.extend(items[:n_val])
        train.extend(items[n_val:])
    return sorted(train, key=lambda e: e.path), sorted(val, key=lambda e: e.path)


def write_lines(path: str, lines: list[str]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{line}\n" for line in lines)


def kinetics_entries(csv_file: str, root: str, class_names: list[str] | None
                     ) -> tuple[list[str], list[Entry], list[tuple[str, str]]]:
    """Class names, the entries whose video exists (paths relative to ``root``) and the dropped rows
    (``(kind, "csv:line: detail")``: missing videos, malformed rows) of an official Kinetics CSV."""
    from video_attn.data.datasets.action_base import AnnotationReport
    from video_attn.data.datasets.kinetics import kinetics_class_names, read_kinetics_csv

    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such directory")
    if class_names is None:
        class_names = kinetics_class_names(csv_file)
    report = AnnotationReport(csv_file)
    try:
        records = read_kinetics_csv(csv_file, root, class_names, report=report)
    except ValueError:
        if not report.problems:  # not "every row dropped": an unreadable file
            raise
        records = []
    dropped = report.dropped_rows()
    entries = [Entry(os.path.relpath(r.path, root).replace(os.sep, "/"), r.label) for r in records]
    return class_names, entries, dropped


def read_classes(path: str) -> list[str]:
    """Class names from a Kinetics CSV (its sorted labels) or a labels file (one name a line)."""
    from video_attn.data.datasets.action_base import read_class_names
    from video_attn.data.datasets.kinetics import kinetics_class_names

    return kinetics_class_names(path) if path.lower().endswith(".csv") else read_class_names(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Write video_list / frame_list annotation files and a labels file for a dataset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  build_list.py tree data/ucf101/videos --out-dir data/ucf101 --val-fraction 0.1 --seed 0\n"
               "  build_list.py tree data/ucf101/frames --frames\n"
               "  build_list.py kinetics k400/val.csv --root k400 --classes-from k400/train.csv\n"
               "Use the root as data.root and the labels file as data.labels_file; "
               "'build_list.py tree -h' for the options.")
    sub = p.add_subparsers(dest="source", required=True)
    tree = sub.add_parser("tree", help="a folder-per-class tree: ROOT/<class>/<video or frame folder>",
                          description="List the videos (or frame folders) of ROOT/<class>/...; labels are "
                                      "the indices of the sorted class folder names.")
    tree.add_argument("root", help="dataset root (the class folders' parent; use it as data.root)")
    tree.add_argument("--out-dir", help="where the lists and classes.txt go (default: ROOT)")
    tree.add_argument("--name", default="list", help="list name without a split (default: list -> list.txt)")
    tree.add_argument("--frames", action="store_true",
                      help="list frame folders with their frame counts (frame_list format) instead of videos")
    tree.add_argument("--frame-template", default="img_{:05d}.jpg",
                      help="--frames: frame file names, numbered from 1 (default img_{:05d}.jpg)")
    tree.add_argument("--val-fraction", type=float, default=0.0,
                      help="write train.txt and val.txt, this fraction of each class in val (default 0: "
                           "one list)")
    tree.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    tree.add_argument("--no-progress", action="store_true", help="no progress bar")
    kin = sub.add_parser("kinetics", help="an official Kinetics CSV",
                         description="List the videos of an official Kinetics CSV found under ROOT and the "
                                     "rows whose videos are missing.")
    kin.add_argument("csv", help="official CSV: label,youtube_id,time_start,time_end,split[,is_cc]")
    kin.add_argument("--root", required=True, help="folder holding the split folders (data.root)")
    kin.add_argument("--out", help="list file to write (default: ROOT/<csv stem>.txt)")
    kin.add_argument("--labels-file", help="labels file to write (default: classes.txt next to the list)")
    kin.add_argument("--classes-from",
                     help="training CSV (or labels file) giving the class order (default: this CSV's labels)")
    args = p.parse_args(argv)
    if args.source == "tree" and not 0.0 <= args.val_fraction < 1.0:
        p.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    return args


def run_tree(args: argparse.Namespace) -> int:
    out_dir = args.out_dir or args.root
    classes, entries = scan_class_tree(args.root, args.frames, args.frame_template, not args.no_progress)
    labels_file = os.path.join(out_dir, "classes.txt")
    write_lines(labels_file, classes)
    if args.val_fraction > 0:
        train, val = split_entries(entries, args.val_fraction, args.seed)
        lists = {"train": train, "val": val}
    else:
        lists = {args.name: sorted((e for items in entries.values() for e in items), key=lambda e: e.path)}
    fmt = "frame_list" if args.frames else "video_list"
    for name, items in lists.items():
        path = os.path.join(out_dir, f"{name}.txt")
        write_lines(path, [e.line() for e in items])
        print(f"wrote {path}: {len(items)} {'frame folders' if args.frames else 'videos'} ({fmt})")
    print(f"wrote {labels_file}: {len(classes)} classes; data.root={args.root}")
    return 0


def run_kinetics(args: argparse.Namespace) -> int:
    out = args.out or os.path.join(args.root, os.path.splitext(os.path.basename(args.csv))[0] + ".txt")
    labels_file = args.labels_file or os.path.join(os.path.dirname(out), "classes.txt")
    class_names = read_classes(args.classes_from) if args.classes_from else None
    class_names, entries, dropped = kinetics_entries(args.csv, args.root, class_names)
    missing = [item for kind, item in dropped if kind == "missing videos"]
    other = [(kind, item) for kind, item in dropped if kind != "missing videos"]
    write_lines(out, [e.line() for e in entries])
    write_lines(labels_file, class_names)
    missing_file = os.path.splitext(out)[0] + ".missing.txt"
    write_lines(missing_file, [item.replace(": ", " ", 1) for item in missing])
    for kind, item in other:
        print(f"skipped ({kind}): {item}", file=sys.stderr)
    total = len(entries) + len(dropped)
    print(f"wrote {out}: {len(entries)} of {total} videos (video_list, data.root={args.root})")
    print(f"wrote {labels_file}: {len(class_names)} classes")
    print(f"{len(missing)} missing videos listed in {missing_file}"
          + (f"; {len(other)} other rows skipped" if other else ""))
    if not entries:
        print(f"build_list.py: error: {args.csv}: no video of it found under {args.root}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return run_tree(args) if args.source == "tree" else run_kinetics(args)
    except (OSError, ValueError) as exc:
        print(f"build_list.py: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
