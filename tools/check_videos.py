#!/usr/bin/env python3
"""Find what a training run would reject in an annotation file: bad lines, missing and undecodable videos.

    python tools/check_videos.py ANN_FILE [--root DIR] [--backend decord|pyav|...] [--format ...]
        [--labels-file FILE] [--min-frames N] [--full]

The annotation file is parsed by the parser of its training dataset (video_attn.data.datasets), so the rules
are the same: malformed lines (a missing or non-integer label, a non-integer frame count, ...), labels out
of range (with ``--labels-file``: ``[0, number of classes)``; else only negative ones), unknown class names,
missing or empty files are reported with ``file:line``. A list without a single entry is an error. Each
remaining video is then opened and its first and last frames decoded (``--full`` decodes every frame); it is
reported when it cannot be opened or decoded, when it decodes fewer frames than its container (or the frame
list) declares (truncated), or when it has fewer than ``--min-frames`` frames (default 1: no length check;
the samplers repeat frames of short videos, so pick the length your sampler should not go below, e.g.
``model.num_segments``, or ``clip_len x frame_interval`` for dense sampling).

Formats: video_list (``path label`` lines, default), frame_list (``dir num_frames label``), kinetics
(official CSV; auto for .csv), sthv2 (official JSON; auto for .json; labels JSON next to it or
``--labels-file``). Backends: the video decoders of ``video_attn.data.decoders.BACKENDS``; frame folders are
always read as frames. The decoders' own log lines (FFmpeg's "[h264 @ 0x...] ...", decord's) are kept off
the console; each problem is printed once as ``path: reason (file:line)`` or ``file:line: reason``, then a
summary line counting each kind of problem. Exit status: 0 when all is well, 1 when anything is wrong (or
on a bad argument or an unreadable annotation file).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from video_attn.data.decoders import BACKENDS

VIDEO_BACKENDS = tuple(b for b in BACKENDS if b != "frames")
FORMATS = ("video_list", "frame_list", "kinetics", "sthv2")
# parser problem kinds whose detail is the path of the video (printed path first)
_PATH_KINDS = ("missing files", "empty files", "missing folders", "missing videos")
_SINGULAR = {
    "malformed lines": "malformed line", "malformed items": "malformed item",
    "labels out of range": "label out of range", "unknown class names": "unknown class name",
    "unknown templates": "unknown template", "missing files": "missing file", "empty files": "empty file",
    "missing folders": "missing folder", "missing videos": "missing video",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Find malformed lines and missing, undecodable, truncated or too short videos of an "
                    "annotation file (what a training run would reject).",
        epilog="Exit status 0 when all is well, 1 when anything is wrong.")
    p.add_argument("ann_file", help="annotation file (video list, frame list, Kinetics CSV or SSv2 JSON)")
    p.add_argument("--root", default="", help="folder the annotation paths are relative to (data.root)")
    p.add_argument("--backend", default="decord" if "decord" in VIDEO_BACKENDS else VIDEO_BACKENDS[0],
                   choices=VIDEO_BACKENDS, help="decoder of video files (default %(default)s)")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="annotation format (default: kinetics for .csv, sthv2 for .json, else video_list)")
    p.add_argument("--labels-file", default=None,
                   help="data.labels_file: labels must be below its class count (kinetics: a labels file or "
                        "the training CSV; sthv2: the labels JSON)")
    p.add_argument("--frame-template", default="img_{:05d}.jpg", help="frame_list: frame file names")
    p.add_argument("--min-frames", type=int, default=1,
                   help="report videos with fewer frames (default 1: no length check)")
    p.add_argument("--full", action="store_true", help="decode every frame (slow), not only first and last")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def read_annotations(ann_file: str, root: str, fmt: str, labels_file: str | None = None
                     ) -> tuple[list[Any], list[tuple[str, str]]]:
    """The usable records of ``ann_file`` and the dropped rows ``(kind, "file:line: detail")``, parsed by
    the training dataset's own parser. Raises ``OSError`` / ``ValueError`` for an unreadable or empty file."""
    from video_attn.data.datasets import action_base, frame_list, kinetics, sthv2, video_list

    if fmt == "kinetics":
        class_names = None
        if labels_file:
            class_names = (kinetics.kinetics_class_names(labels_file) if labels_file.lower().endswith(".csv")
                           else action_base.read_class_names(labels_file))
        parse = lambda report: kinetics.read_kinetics_csv(ann_file, root, class_names, report=report)
    elif fmt == "sthv2":
        labels = sthv2.read_sthv2_labels(labels_file or os.path.join(os.path.dirname(ann_file),
                                                                       sthv2.LABELS_FILE_NAME))
        parse = lambda report: sthv2.read_sthv2_json(ann_file, root, labels, len(labels), report=report)
    else:
        num_classes = len(action_base.read_class_names(labels_file)) if labels_file else None
        reader = frame_list.read_frame_list if fmt == "frame_list" else video_list.read_video_list
        parse = lambda report: reader(ann_file, root, num_classes, report=report)
    report = action_base.AnnotationReport(ann_file)
    try:
        records = parse(report)
    except ValueError:
        if not report.problems:  # nothing dropped yet no usable row: an empty (or unreadable) file
            raise
        records = []  # every row is bad: report them all
    return records, report.dropped_rows()


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null: native decoders (FFmpeg inside decord, decord's own logger)
    write there directly, past Python's ``sys.stderr``. The tool's messages are written outside."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2: nothing to protect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_one(path: str, backend: str, num_frames: int | None, template: str, full: bool,
              min_frames: int = 1) -> str | None:
    """None when the video is fine, else the reason it is not."""
    from video_attn.data.decoders import DecodeError, PyAVReader, open_video

    try:
        # as the training datasets open it: a file decord cannot open is read with PyAV
        with open_video(path, backend="frames" if num_frames is not None else backend,
                        frame_template=template, num_frames=num_frames) as reader:
            declared = len(reader)
            if num_frames is not None and declared < num_frames:
                return f"truncated: list says {num_frames} frames, folder has {declared}"
            indices = list(range(declared)) if full else [0, declared - 1]
            reader.get_frames(indices)
            if len(reader) < declared:
                return f"truncated: {declared} frames indexed, only {len(reader)} decodable"
            count = len(reader)
            if num_frames is None:
                # The container's declared frame count against what can be demuxed and decoded.
                av_reader = reader if isinstance(reader, PyAVReader) else PyAVReader(path)
                try:
                    av_reader.get_frames([len(av_reader) - 1])
                    if av_reader.metadata_frames and len(av_reader) < av_reader.metadata_frames:
                        return (f"truncated: container declares {av_reader.metadata_frames} frames, "
                                f"{len(av_reader)} decodable")
                    count = min(count, len(av_reader))
                finally:
                    av_reader.close()
            if count < min_frames:
                return f"too short: {count} frames, --min-frames {min_frames}"
    except DecodeError as exc:
        return str(exc).replace(f"{path}: ", "", 1)
    except Exception as exc:  # noqa: BLE001 - report any decoder failure, keep checking the others
        return f"{type(exc).__name__}: {exc}"
    return None


def decode_kind(reason: str) -> str:
    """The summary's name for a decode problem."""
    for kind in ("truncated", "too short"):
        if reason.startswith(kind):
            return kind
    return "undecodable"


def format_dropped(ann_file: str, kind: str, item: str) -> str:
    """``path: missing file (file:line)`` for file problems, ``file:line: malformed line: detail`` else."""
    if item.startswith(f"{ann_file}:"):  # the parsers' "file:line: detail"
        line, _, detail = item[len(ann_file) + 1:].partition(": ")
        where = f"{ann_file}:{line}"
    else:
        where, _, detail = item.partition(": ")
    name = _SINGULAR.get(kind, kind)
    return f"{detail}: {name} ({where})" if kind in _PATH_KINDS else f"{where}: {name}: {detail}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import av

    av.logging.set_level(None)  # PyAV: drop FFmpeg's log lines (the errors still raise)
    fmt = args.format
    if fmt is None:
        extension = os.path.splitext(args.ann_file)[1].lower()
        fmt = {".csv": "kinetics", ".json": "sthv2"}.get(extension, "video_list")
    try:
        records, dropped = read_annotations(args.ann_file, args.root, fmt, args.labels_file)
    except (OSError, ValueError, KeyError) as exc:
        print(f"check_videos.py: error: {exc}", file=sys.stderr)
        return 1
    problems: Counter[str] = Counter()
    for kind, item in dropped:
        problems[kind] += 1
        print(format_dropped(args.ann_file, kind, item))
    for record in tqdm(records, desc="checking", unit="video", disable=args.no_progress, file=sys.stderr):
        with native_stderr_silenced():
            reason = check_one(record.path, args.backend, record.num_frames, args.frame_template, args.full,
                               args.min_frames)
        if reason is not None:
            problems[decode_kind(reason)] += 1
            tqdm.write(f"{record.path}: {reason} ({record.source})", file=sys.stdout)
    total = len(records) + len(dropped)
    if not problems:
        print(f"all {total} videos OK")
        return 0
    counts = ", ".join(f"{kind}: {n}" for kind, n in sorted(problems.items()))
    print(f"{sum(problems.values())} of {total} videos bad ({counts})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
