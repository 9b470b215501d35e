"""DukeMTMC-VideoReID (Wu et al., "Exploit the Unknown Gradually", CVPR 2018) in its released layout::

    <root>/{train,query,gallery}/<pid:4>/<tracklet:4>/<frame>.jpg    e.g. 0001C6F0099X30823.jpg

Frame names carry the pid, the camera (1..8) and the frame index (``F0099``); frames are ordered by that
index, not by file-system order. Every tracklet is checked (name pid == folder pid, one camera); a tracklet
that fails is skipped, counted and logged with its folder. Real data: 702 train ids / 2,196 tracklets,
702 query and 2,636 gallery tracklets, query not in gallery.

The walk is cached per split as an ``.npz`` keyed by the mtimes of the split, identity and tracklet folders
(one ``scandir`` per folder to compute the key, no listing of the frames).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

from .tracklets import TrackletIndex, load_cached_arrays, save_cached_arrays

logger = logging.getLogger(__name__)

SPLITS = ("train", "query", "gallery")
FRAME_RE = re.compile(r"^(\d+)C(\d+)F(\d+)(?:X\d+)?\.(?:jpg|jpeg|png)$", re.IGNORECASE)
_CACHE_VERSION = 1


def _tracklet_dirs(split_dir: Path) -> list[tuple[str, str, int]]:
    """(pid folder, tracklet folder, mtime_ns) for every tracklet folder, sorted."""
    out = []
    with os.scandir(split_dir) as pids:
        for p in pids:
            if not p.is_dir():
                continue
            with os.scandir(p.path) as tracks:
                out.extend((p.name, t.name, t.stat().st_mtime_ns) for t in tracks if t.is_dir())
    return sorted(out)


def _walk(split_dir: Path, rel: str, dirs: list[tuple[str, str, int]]) -> dict[str, np.ndarray]:
    paths: list[bytes] = []
    starts, ends, pids, camids, skipped = [], [], [], [], []
    for pid_dir, track_dir, _ in dirs:
        try:
            pid = int(pid_dir)
        except ValueError:
            skipped.append((f"{pid_dir}/{track_dir}", "identity folder is not a number"))
            continue
        frames = []
        bad = None
        for name in os.listdir(split_dir / pid_dir / track_dir):
            m = FRAME_RE.match(name)
            if m is None:
                if name.lower().endswith((".jpg", ".jpeg", ".png")):
                    bad = f"frame name {name!r} is not <pid>C<cam>F<frame>X<n>.jpg"
                continue
            frames.append((int(m.group(3)), name, int(m.group(1)), int(m.group(2))))
        if bad is None and not frames:
            bad = "no frames"
        if bad is None and any(f[2] != pid for f in frames):
            bad = f"a frame name's pid differs from the folder's ({pid})"
        if bad is None and len({f[3] for f in frames}) != 1:
            bad = f"frames from several cameras {sorted({f[3] for f in frames})}"
        if bad is not None:
            skipped.append((f"{pid_dir}/{track_dir}", bad))
            continue
        frames.sort()
        starts.append(len(paths))
        paths.extend(f"{rel}/{pid_dir}/{track_dir}/{f[1]}".encode() for f in frames)
        ends.append(len(paths))
        pids.append(pid)
        camids.append(frames[0][3])
    for where, reason in skipped[:20]:
        logger.warning("DukeMTMC-VideoReID %s/%s skipped: %s", rel, where, reason)
    if skipped:
        logger.warning("DukeMTMC-VideoReID %s: %d tracklets skipped", rel, len(skipped))
    return {
        "paths": np.array(paths, dtype="S") if paths else np.zeros(0, dtype="S1"),
        "starts": np.asarray(starts, dtype=np.int64),
        "ends": np.asarray(ends, dtype=np.int64),
        "pids": np.asarray(pids, dtype=np.int64),
        "camids": np.asarray(camids, dtype=np.int64),
        "num_skipped": np.array(len(skipped), dtype=np.int64),
    }


def load_dukev_split(
    root: str | Path, split: str, cache_dir: str | Path | None = None, use_cache: bool = True
) -> TrackletIndex:
    """The tracklets of ``split`` (train | query | gallery) of DukeMTMC-VideoReID under ``root``."""
    if split not in SPLITS:
        raise ValueError(f"DukeMTMC-VideoReID split {split!r}; valid: {', '.join(SPLITS)}")
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"DukeMTMC-VideoReID folder not found: {split_dir} (data.root={root})")
    dirs = _tracklet_dirs(split_dir)
    h = hashlib.sha1(f"dukev-v{_CACHE_VERSION}:{split}:{split_dir.stat().st_mtime_ns}".encode())
    for d in dirs:
        h.update(f"{d[0]}/{d[1]}:{d[2]};".encode())
    fname = f"dukev_{split}_{h.hexdigest()[:16]}.npz"
    arrays = load_cached_arrays(root, cache_dir, fname) if use_cache else None
    if arrays is None:
        arrays = _walk(split_dir, split, dirs)
        if use_cache:
            save_cached_arrays(root, cache_dir, fname, arrays)
    n = len(arrays["starts"])
    return TrackletIndex(
        root, arrays["paths"], arrays["starts"], arrays["ends"], arrays["pids"], arrays["camids"],
        np.arange(n),
    )
