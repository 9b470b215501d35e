"""The action-recognition dataset base: records -> sampled, decoded, transformed clips.

Subclasses only parse their annotation format into :class:`VideoRecord` rows (reporting bad rows through
:class:`AnnotationReport`); loading, retries and the item dict live here. An item is
``{"clip", "label", "index", "valid", "num_failed", "path"}`` with ``clip`` float ``(T, 3, H, W)`` for one
view or ``(V, T, 3, H, W)`` for ``V = num_clips x num_crops`` test views (clip-major order), and ``path`` the
video file or frame folder the clip comes from.

Randomness: :meth:`ActionDataset.load` draws every random choice of an item (frames, crop, flip,
replacement row) from the generator it is given; the loaders hand it one seeded from (seed, epoch, index)
(``video_attn.data.build.EpochSeededDataset``), so an item is the same in any DataLoader worker. Plain
indexing ``ds[i]`` uses a fixed generator seeded from ``(seed, i)``.

Bad videos: in training (``replace_failed=True``) a video that fails to load is logged and replaced by a
random other row, up to ``max_retries`` times, then a ``RuntimeError`` names the last failures. In
evaluation the item is a zero clip with ``valid=False`` for the evaluator to exclude and count.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..clips import read_views
from ..decoders import DecodeError, open_video, torchcodec_unavailable_reason

__all__ = ["ActionDataset", "AnnotationReport", "VideoRecord", "read_class_names", "read_lines"]

_LOGGER = logging.getLogger(__name__)


@dataclass
class VideoRecord:
    """One annotation row: a video file (or frame folder), its label, and where it came from."""

    path: str
    label: int
    num_frames: int | None = None  # frame folders: the count from the list file
    source: str = ""  # "file:line" for messages


class AnnotationReport:
    """Collects bad annotation rows while parsing, then reports them once (or raises with ``strict``)."""

    def __init__(self, ann_file: str) -> None:
        self.ann_file = ann_file
        self.problems: dict[str, list[str]] = defaultdict(list)
        self.num_rows = 0

    def add(self, kind: str, where: str, detail: str) -> None:
        self.problems[kind].append(f"{where}: {detail}")

    @property
    def num_dropped(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def dropped_rows(self) -> list[tuple[str, str]]:
        """``(kind, "file:line: detail")`` of every dropped row, grouped by kind."""
        return [(kind, item) for kind, items in self.problems.items() for item in items]

    def summary(self, examples: int = 3) -> str:
        parts = []
        for kind, items in sorted(self.problems.items()):
            shown = "; ".join(items[:examples]) + ("; ..." if len(items) > examples else "")
            parts.append(f"{len(items)} {kind} ({shown})")
        return ", ".join(parts)

    def finish(self, records: list[VideoRecord], strict: bool,
               fatal_kinds: tuple[str, ...] | None = None) -> None:
        """Warn (or raise ``ValueError`` when ``strict``) about dropped rows; no usable row is an error.

        ``fatal_kinds`` limits which problems ``strict`` raises for (Kinetics: missing videos never are).
        """
        if self.problems:
            fatal = [k for k in self.problems if fatal_kinds is None or k in fatal_kinds]
            message = f"{self.ann_file}: dropped {self.num_dropped} of {self.num_rows} rows: {self.summary()}"
            if strict and fatal:
                raise ValueError(message)
            _LOGGER.warning(message)
            for kind, items in self.problems.items():
                for item in items:
                    _LOGGER.debug("%s: %s", kind, item)
        if not records:
            raise ValueError(f"{self.ann_file}: no usable rows"
                             + (f" ({self.summary()})" if self.problems else " (empty annotation file)"))


def read_lines(ann_file: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-empty, non-comment lines of a text file."""
    try:
        with open(ann_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read annotation file {ann_file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{ann_file}: not a UTF-8 text file ({exc})") from None
    return [(i, line.strip()) for i, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")]


def read_class_names(labels_file: str) -> list[str]:
    """Class names of a text file, one a line: line ``i + 1`` names class ``i``.

    Surrounding whitespace is stripped and trailing blank lines are ignored; a blank line before the last
    name (it would shift every later index) and a repeated name are errors naming the file and line.
    """
    try:
        with open(labels_file, encoding="utf-8") as f:
            lines = [line.strip() for line in f.read().splitlines()]
    except OSError as exc:
        raise FileNotFoundError(f"cannot read labels file {labels_file}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{labels_file}: not a UTF-8 text file ({exc})") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError(f"{labels_file}: empty labels file (expected one class name a line)")
    first_line: dict[str, int] = {}
    for line_no, name in enumerate(lines, 1):
        if not name:
            raise ValueError(f"{labels_file}:{line_no}: empty class name (line i + 1 names class i)")
        if name in first_line:
            raise ValueError(f"{labels_file}:{line_no}: class name {name!r} repeats line {first_line[name]}")
        first_line[name] = line_no
    return lines


def check_label(label: int, num_classes: int | None, where: str, report: AnnotationReport) -> bool:
    if label < 0 or (num_classes is not None and label >= num_classes):
        valid = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        report.add("labels out of range", where, f"label {label} not in {valid}")
        return False
    return True


class ActionDataset(Dataset):
    """Decodes, samples and transforms the videos of a list of :class:`VideoRecord`.

    Args:
        records: the parsed rows.
        sampler: frame sampler, ``sampler(num_frames, rng) -> (num_views, clip_len)`` indices
            (video_attn.data.frame_sampling).
        transform: ``transform(frames, label, rng) -> (Tensor, label)`` (video_attn.data.transforms).
        backend: decoder for video files (frame folders always use the frame reader).
        decode_device: ``"cpu"``, or ``"cuda"`` with the torchcodec backend (main process only).
        replace_failed: training behaviour for undecodable videos (see module docstring).
        max_retries: replacements tried before giving up.
        seed: seed of the generator of plain indexing ``ds[i]`` (loaders hand :meth:`load` their own).
        frame_template: file names inside frame folders.
    """

    def __init__(self, records: list[VideoRecord], sampler: Any, transform: Any, backend: str = "decord",
                 replace_failed: bool = True, max_retries: int = 10, seed: int = 0,
                 frame_template: str = "img_{:05d}.jpg", decode_device: str = "cpu") -> None:
        unavailable = torchcodec_unavailable_reason(decode_device) if backend == "torchcodec" else None
        if unavailable is not None:
            # fail now: every video would otherwise be logged as undecodable and replaced (or zeroed)
            raise DecodeError(f"data.backend=torchcodec: {unavailable}")
        self.records = records
        self.sampler = sampler
        self.transform = transform
        self.backend = backend
        self.decode_device = decode_device
        self.replace_failed = replace_failed
        self.max_retries = max_retries
        self.seed = seed
        self.frame_template = frame_template
        self.num_failed = 0  # load failures seen by this process (each worker counts its own)
        swaps_labels = any(getattr(op, "label_map", None) for op in getattr(transform, "ops", []))
        if sampler.num_views > 1 and swaps_labels:
            raise ValueError("several clips per video with a flip label map could give one video several "
                             "labels; use num_clips=1")

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    def read_clip(self, row: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        """Clip tensor and (possibly flip-swapped) label of row ``row``; raises on any decode problem."""
        record = self.records[row]
        backend = "frames" if record.num_frames is not None else self.backend
        with open_video(record.path, backend=backend, frame_template=self.frame_template,
                        num_frames=record.num_frames, device=self.decode_device) as reader:
            clip, label = read_views(reader, self.sampler, self.transform, record.label, rng)
        return clip, int(label)

    def _zero_clip(self) -> torch.Tensor:
        size = getattr(self.transform, "output_size", None)
        if size is None or self.sampler.clip_len < 1:
            raise RuntimeError("cannot build a placeholder clip: output size unknown")
        views = self.sampler.num_views * getattr(self.transform, "num_crops", 1)
        shape = (self.sampler.clip_len, 3, *size)
        return torch.zeros((views, *shape) if views > 1 else shape)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.load(index, np.random.default_rng([self.seed, index]))

    def load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """The item of row ``index``, every random choice drawn from ``rng`` (see the module docstring)."""
        failures: list[str] = []
        row = index
        for attempt in range(self.max_retries + 1):
            record = self.records[row]
            try:
                clip, label = self.read_clip(row, rng)
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad video, never a crash
                self.num_failed += 1
                failures.append(f"{record.path}: {exc}")
                _LOGGER.warning("cannot load %s (row %d%s): %s", record.path, row,
                                f", {record.source}" if record.source else "", exc)
                if not self.replace_failed:
                    return {"clip": self._zero_clip(), "label": record.label, "index": row, "valid": False,
                            "num_failed": 1, "path": record.path}
                row = int(rng.integers(len(self.records)))
                continue
            return {"clip": clip, "label": label, "index": row, "valid": True, "num_failed": attempt,
                    "path": record.path}
        raise RuntimeError(f"{self.max_retries + 1} videos in a row failed to load (starting at row "
                           f"{index}); last errors: " + " | ".join(failures[-3:]))
