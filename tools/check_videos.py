#!/usr/bin/env python3
"""List the unreadable or truncated videos of an annotation file.

    python tools/check_videos.py ANN_FILE [--root DIR] [--backend decord|pyav] [--format ...]

Each video is opened, and its first and last frames are decoded (``--full`` decodes every frame). A video is
reported when it is missing, empty, cannot be opened, has no frames, fails to decode, or decodes fewer
frames than its container declares (truncated). Formats: video_list (``path label`` lines, default),
frame_list (``dir num_frames label``), kinetics (official CSV; auto for .csv), sthv2 (official JSON; auto
for .json). Exit status: 0 all good, 1 bad videos found (or a bad argument), printed as ``path: reason``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys

from tqdm import tqdm


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Find unreadable or truncated videos of an annotation file.")
    p.add_argument("ann_file", help="annotation file (video list, frame list, Kinetics CSV or SSv2 JSON)")
    p.add_argument("--root", default="", help="folder the annotation paths are relative to")
    p.add_argument("--backend", default="decord", choices=["decord", "pyav"], help="decoder (default decord)")
    p.add_argument("--format", default=None, choices=["video_list", "frame_list", "kinetics", "sthv2"],
                   help="annotation format (default: by extension, else video_list)")
    p.add_argument("--frame-template", default="img_{:05d}.jpg", help="frame_list: frame file names")
    p.add_argument("--full", action="store_true", help="decode every frame (slow), not only first and last")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def list_paths(ann_file: str, root: str, fmt: str) -> list[tuple[str, int | None]]:
    """(path, expected frame count or None) of every row, bad rows included (they are what we look for)."""
    if fmt == "kinetics":
        with open(ann_file, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        from video_attn.data.datasets.kinetics import find_kinetics_video

        out = []
        for row in rows:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            name = f"{row['youtube_id']}_{start:06d}_{end:06d}"
            split = row.get("split", "")
            path = find_kinetics_video(root, split, row.get("label", ""), name)
            out.append((path or os.path.join(root, split, name + ".mp4"), None))
        return out
    if fmt == "sthv2":
        with open(ann_file, encoding="utf-8") as f:
            return [(os.path.join(root, f"{item['id']}.webm"), None) for item in json.load(f)]
    out = []
    with open(ann_file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if fmt == "frame_list":
                parts = line.rsplit(maxsplit=2)
                count = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
                out.append((os.path.join(root, parts[0]), count))
            else:
                parts = line.rsplit(maxsplit=1)
                out.append((os.path.join(root, parts[0] if len(parts) == 2 else line), None))
    return out


def check_one(path: str, backend: str, num_frames: int | None, template: str, full: bool) -> str | None:
    """None when the video is fine, else the reason it is not."""
    from video_attn.data.decoders import DecodeError, PyAVReader, open_video

    try:
        with open_video(path, backend="frames" if num_frames is not None else backend, fallback=False,
                        frame_template=template, num_frames=num_frames) as reader:
            declared = len(reader)
            if num_frames is not None and declared < num_frames:
                return f"truncated: list says {num_frames} frames, folder has {declared}"
            indices = list(range(declared)) if full else [0, declared - 1]
            reader.get_frames(indices)
            if len(reader) < declared:
                return f"truncated: {declared} frames indexed, only {len(reader)} decodable"
            if num_frames is None:
                # The container's declared frame count against what can be demuxed and decoded.
                av_reader = reader if isinstance(reader, PyAVReader) else PyAVReader(path)
                try:
                    av_reader.get_frames([len(av_reader) - 1])
                    if av_reader.metadata_frames and len(av_reader) < av_reader.metadata_frames:
                        return (f"truncated: container declares {av_reader.metadata_frames} frames, "
                                f"{len(av_reader)} decodable")
                finally:
                    av_reader.close()
    except DecodeError as exc:
        return str(exc).replace(f"{path}: ", "", 1)
    except Exception as exc:  # noqa: BLE001 - report any decoder failure, keep checking the others
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    fmt = args.format
    if fmt is None:
        extension = os.path.splitext(args.ann_file)[1].lower()
        fmt = {".csv": "kinetics", ".json": "sthv2"}.get(extension, "video_list")
    try:
        videos = list_paths(args.ann_file, args.root, fmt)
    except (OSError, ValueError, KeyError) as exc:
        print(f"check_videos.py: error: cannot read {args.ann_file} as {fmt}: {exc}", file=sys.stderr)
        return 1
    bad = []
    for path, count in tqdm(videos, desc="checking", unit="video", disable=args.no_progress, file=sys.stderr):
        reason = check_one(path, args.backend, count, args.frame_template, args.full)
        if reason is not None:
            bad.append((path, reason))
            tqdm.write(f"{path}: {reason}", file=sys.stdout)
    print(f"{len(bad)} of {len(videos)} videos bad" if bad else f"all {len(videos)} videos OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
