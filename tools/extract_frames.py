#!/usr/bin/env python3
"""Extract the frames of every video of a tree into the ``frame_list`` layout (mmaction2's rawframes).

    python tools/extract_frames.py SRC DST [--workers N] [--short-side N] [--template img_{:05d}.jpg]
        [--quality 95] [--list DST/frames.txt]

Every video file under SRC (``a/b.mp4``; names starting with ``.`` are skipped) becomes the folder
``DST/a/b/`` holding every decoded frame as ``img_00001.jpg``, ``img_00002.jpg``, ... (numbered from 1, as the
frame-folder reader of ``data.format=frame_list`` expects; ``--template`` = ``data.frame_template``).
``--short-side N`` scales frames down so that their short side is N (aspect kept; never upscaled).
``--list FILE`` then writes the frame_list (``dir num_frames label`` lines, paths relative to DST) and
``classes.txt`` next to it, for a tree of class folders (``SRC/<class>/<video>``), exactly as
``build_list.py tree DST --frames`` would.

Resumable: a folder is filled under a hidden temporary name (``DST/a/.b.part``) and renamed when complete,
so an existing folder is complete and is skipped by a rerun, and an interrupted one is redone from
scratch. A video that fails (unreadable, no frames) is listed at the end; the others are still extracted.
Exit status: 0 all extracted (or already there), 1 when any failed or on a bad argument.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from build_list import Entry, scan_class_tree, write_lines
from resize_videos import Result, check_tree, quiet_av, run_jobs, scaled_size, summarize


def frame_folder(rel: str) -> str:
    """The frame folder (relative to DST) of a video (relative to SRC): its path without the extension."""
    return os.path.splitext(rel)[0]


def part_folder(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.part")


def extract(src: str, folder: str, template: str, short_side: int | None, quality: int) -> int:
    """Write every frame of ``src`` into ``folder`` (numbered from 1); the frame count. Raises on failure."""
    import av

    count = 0
    with av.open(src) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if short_side is not None and min(frame.width, frame.height) > short_side:
                width, height = scaled_size(frame.width, frame.height, short_side)
                frame = frame.reformat(width=width, height=height, interpolation="AREA")
            frame.to_image().save(os.path.join(folder, template.format(count + 1)), quality=quality)
            count += 1
    if count == 0:
        raise ValueError("no decodable frame")
    return count


def extract_one(job: tuple[str, str, str, str, int | None, int]) -> Result:
    """Extract one video (a pool task); any error becomes a "failed" result, never an exception."""
    src_root, dst_root, rel, template, short_side, quality = job
    quiet_av()
    src = os.path.join(src_root, rel)
    dst = os.path.join(dst_root, frame_folder(rel))
    if os.path.isdir(dst):
        return Result(rel, "skipped")
    tmp = part_folder(dst)
    try:
        shutil.rmtree(tmp, ignore_errors=True)  # an interrupted run's leftovers
        os.makedirs(tmp)
        extract(src, tmp, template, short_side, quality)
        os.replace(tmp, dst)  # atomic: dst exists only when complete
        return Result(rel, "done")
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
        shutil.rmtree(tmp, ignore_errors=True)
        message = str(exc).replace(src, "").strip(" :'") or type(exc).__name__
        return Result(rel, "failed", f"{type(exc).__name__}: {message}")


def write_frame_list(dst: str, list_file: str, template: str) -> None:
    """The frame_list of the class-folder tree ``dst`` and ``classes.txt`` next to it."""
    classes, entries = scan_class_tree(dst, frames=True, template=template, progress=False)
    items: list[Entry] = sorted((e for group in entries.values() for e in group), key=lambda e: e.path)
    write_lines(list_file, [e.line() for e in items])
    labels_file = os.path.join(os.path.dirname(os.path.abspath(list_file)), "classes.txt")
    write_lines(labels_file, classes)
    print(f"wrote {list_file}: {len(items)} frame folders (frame_list, data.root={dst}, "
          f"data.frame_template={template}); {labels_file}: {len(classes)} classes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Extract video frames to one folder of JPEGs per video (frame_list layout; resumable).",
        epilog="Frames are numbered from 1 (img_00001.jpg), as data.format=frame_list reads them. Rerun "
               "after an interruption: finished folders are skipped, unfinished ones redone.")
    p.add_argument("src", help="input folder of videos (searched recursively)")
    p.add_argument("dst", help="output folder: DST/<video path without extension>/img_00001.jpg ...")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: the CPU count)")
    p.add_argument("--short-side", type=int, default=None,
                   help="scale frames down to this short side (default: keep the size)")
    p.add_argument("--template", default="img_{:05d}.jpg",
                   help="frame file names, numbered from 1 (default img_{:05d}.jpg; = data.frame_template)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    p.add_argument("--list", dest="list_file",
                   help="also write this frame_list (and classes.txt next to it); SRC must be class folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.workers < 1 or (args.short_side is not None and args.short_side < 2):
        p.error("--workers must be >= 1 and --short-side >= 2")
    try:
        names = {args.template.format(i) for i in (1, 2)}
    except (IndexError, KeyError, ValueError) as exc:
        p.error(f"--template {args.template!r} cannot number frames: {exc}")
    if len(names) != 2 or any(os.sep in n for n in names):
        p.error(f"--template {args.template!r} must give one file name per frame number")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        videos = check_tree(args.src, args.dst)
    except ValueError as exc:
        print(f"extract_frames.py: error: {exc}", file=sys.stderr)
        return 1
    jobs = [(args.src, args.dst, rel, args.template, args.short_side, args.quality) for rel in videos]
    results = run_jobs(extract_one, jobs, args.workers, "extracting", not args.no_progress)
    status = summarize(results, {"done": "extracted", "skipped": "already done", "failed": "failed"})
    if args.list_file:
        try:
            write_frame_list(args.dst, args.list_file, args.template)
        except (OSError, ValueError) as exc:
            print(f"extract_frames.py: error: {exc}", file=sys.stderr)
            return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
