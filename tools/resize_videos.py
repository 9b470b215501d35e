#!/usr/bin/env python3
"""Re-encode every video of a tree so that its short side is N pixels (mmaction2's resize_videos.py).

    python tools/resize_videos.py SRC DST [--short-side 256] [--workers N] [--crf 23] [--preset veryfast]

Every video file under SRC (.mp4, .mkv, .webm, .avi, .mov, ...; names starting with ``.`` are skipped) is
written to the same relative path under DST: H.264 (libx264, yuv420p, ``--crf``) with the short side
``--short-side`` (rounded down to even), the aspect ratio kept (the long side rounded to even), every
decoded frame kept at the input's average frame rate (constant in the output). Audio is dropped (the
models read frames only). .mp4 / .m4v / .mov / .mkv keep their name; other containers (.webm cannot hold
H.264, .avi, ...) get the .mp4 extension. Videos whose short side is already N or less are never upscaled:
they are copied unchanged (byte for byte, audio included) when they keep their name, else re-encoded at
their own size (odd sides rounded down to even).

Resumable: each output is written to a hidden temporary ``.NAME.part`` next to it and renamed when
complete, so an output that exists is complete and is skipped by a rerun, and a left-over ``.part`` from an
interrupted run is redone. A video that fails (unreadable, no video stream, ...) is listed at the end with
its reason; the others are still converted. Exit status: 0 all converted (or already there), 1 when any
failed or on a bad argument.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from fractions import Fraction
from multiprocessing import Pool
from typing import Any, NamedTuple

from build_list import find_videos
from tqdm import tqdm

# output containers that hold H.264, by extension; any other extension is written as .mp4
_H264_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


class Result(NamedTuple):
    """What became of one input: status "done" | "copied" | "skipped" | "failed", and why it failed."""

    rel: str
    status: str
    reason: str = ""


def output_rel(rel: str) -> str:
    """The output's path relative to DST for an input's path relative to SRC (see the module docstring)."""
    base, ext = os.path.splitext(rel)
    return rel if ext.lower() in _H264_CONTAINERS else base + ".mp4"


def part_path(path: str) -> str:
    """The hidden temporary name an output is written to before the atomic rename."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.part")


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side ``short_side`` (never larger than now), both even, aspect kept."""
    short = min(width, height)
    target = min(short_side, short) // 2 * 2
    if target < 2:
        raise ValueError(f"frame {width}x{height} too small to encode as yuv420p")
    if short <= short_side:
        return width // 2 * 2, height // 2 * 2
    scale = target / short
    if width <= height:
        return target, max(2, round(height * scale / 2) * 2)
    return max(2, round(width * scale / 2) * 2), target


def quiet_av() -> None:
    """Keep FFmpeg's own log lines ("[h264 @ 0x...] error while decoding") off the console."""
    import av

    av.logging.set_level(None)


def reencode(src: str, dst: str, short_side: int, crf: int, preset: str, threads: int) -> None:
    """Write ``src`` to ``dst`` as H.264 with the short side ``short_side`` (no audio); raises on failure."""
    import av

    fmt = _H264_CONTAINERS.get(os.path.splitext(dst)[1].lower(), "mp4")
    with av.open(src) as source:
        if not source.streams.video:
            raise ValueError("no video stream")
        stream = source.streams.video[0]
        stream.codec_context.thread_count = threads
        width, height = scaled_size(stream.codec_context.width, stream.codec_context.height, short_side)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        rate = Fraction(rate).limit_denominator(1001)
        count = 0
        with av.open(dst, "w", format=fmt) as out:
            encoder = out.add_stream("libx264", rate=rate)
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.codec_context.thread_count = threads
            encoder.options = {"crf": str(crf), "preset": preset}
            for frame in source.decode(stream):
                frame = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                frame.pts, frame.time_base = count, 1 / rate  # constant rate, every decoded frame kept
                for packet in encoder.encode(frame):
                    out.mux(packet)
                count += 1
            for packet in encoder.encode():
                out.mux(packet)
        if count == 0:
            raise ValueError("no decodable frame")


def video_size(path: str) -> tuple[int, int]:
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        context = container.streams.video[0].codec_context
        return context.width, context.height


def resize_one(job: tuple[str, str, str, int, int, str, int]) -> Result:
    """Convert one video (a pool task); any error becomes a "failed" result, never an exception."""
    src_root, dst_root, rel, short_side, crf, preset, threads = job
    quiet_av()
    src = os.path.join(src_root, rel)
    dst = os.path.join(dst_root, output_rel(rel))
    if os.path.isfile(dst) and os.path.getsize(dst) > 0:
        return Result(rel, "skipped")
    tmp = part_path(dst)
    try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if min(video_size(src)) <= short_side and output_rel(rel) == rel:
            shutil.copyfile(src, tmp)
            status = "copied"
        else:
            reencode(src, tmp, short_side, crf, preset, threads)
            status = "done"
        os.replace(tmp, dst)  # atomic: dst exists only when complete
        return Result(rel, status)
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
        if os.path.exists(tmp):
            os.remove(tmp)
        message = str(exc).replace(src, "").strip(" :'") or type(exc).__name__
        return Result(rel, "failed", f"{type(exc).__name__}: {message}")


def run_jobs(func: Callable[[Any], Result], jobs: list[Any], workers: int, desc: str,
             progress: bool = True) -> list[Result]:
    """``func`` over ``jobs`` (in ``workers`` processes when > 1) behind a progress bar, under which failures
    are printed as they happen."""
    results: list[Result] = []

    def collect(outcomes: Iterable[Result]) -> None:
        with tqdm(outcomes, total=len(jobs), desc=desc, unit="video", disable=not progress,
                  file=sys.stderr) as bar:
            for result in bar:
                results.append(result)
                if result.status == "failed" and progress:  # else only in the summary
                    bar.write(f"{result.rel}: {result.reason}", file=sys.stderr)

    if workers <= 1:
        collect(map(func, jobs))
    else:
        with Pool(workers) as pool:
            collect(pool.imap_unordered(func, jobs))
    return results


def summarize(results: list[Result], verbs: dict[str, str]) -> int:
    """Print the counts and the failures; the exit status (1 when any failed)."""
    counts = {status: sum(r.status == status for r in results) for status in verbs}
    print(", ".join(f"{counts[s]} {verb}" for s, verb in verbs.items()) + f" (of {len(results)} videos)")
    failed = sorted((r for r in results if r.status == "failed"), key=lambda r: r.rel)
    if failed:
        print(f"{len(failed)} failed:")
        for r in failed:
            print(f"  {r.rel}: {r.reason}")
    return 1 if failed else 0


def check_tree(src: str, dst: str) -> list[str]:
    """The videos of ``src`` (relative paths); a ``ValueError`` naming the folder when there is nothing to
    do."""
    if not os.path.isdir(src):
        raise ValueError(f"{src}: no such directory")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError(f"{dst}: the output folder must differ from the input folder")
    videos = find_videos(src)
    if not videos:
        raise ValueError(f"{src}: no video files found")
    return videos


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Re-encode the videos of a tree to H.264 with a given short side (resumable, parallel).",
        epilog="Outputs keep their relative paths (.webm, .avi, ... become .mp4); smaller videos are not "
               "upscaled; audio is dropped. Rerun after an interruption: finished outputs are skipped.")
    p.add_argument("src", help="input folder (searched recursively)")
    p.add_argument("dst", help="output folder (same relative paths)")
    p.add_argument("--short-side", type=int, default=256, help="short side in pixels (default 256)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: the CPU count)")
    p.add_argument("--crf", type=int, default=23, help="x264 quality, lower is better (default 23)")
    p.add_argument("--preset", default="veryfast", help="x264 speed preset (default veryfast)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.short_side < 2 or args.workers < 1:
        p.error("--short-side must be >= 2 and --workers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        videos = check_tree(args.src, args.dst)
    except ValueError as exc:
        print(f"resize_videos.py: error: {exc}", file=sys.stderr)
        return 1
    threads = 1 if args.workers > 1 else 0  # 0: FFmpeg picks
    jobs = [(args.src, args.dst, rel, args.short_side, args.crf, args.preset, threads) for rel in videos]
    results = run_jobs(resize_one, jobs, args.workers, "resizing", not args.no_progress)
    return summarize(results, {"done": "resized", "copied": "copied (short side already <= "
                               f"{args.short_side})", "skipped": "already done", "failed": "failed"})


if __name__ == "__main__":
    sys.exit(main())
