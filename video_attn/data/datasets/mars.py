"""MARS (Zheng et al., "MARS: A Video Benchmark for Large-Scale Person Re-identification", ECCV 2016),
parsed from its released metadata exactly as published::

    <root>/bbox_train/<pid:4>/<pid>C<cam>T<tracklet:4>F<frame:3>.jpg   (625 identities)
    <root>/bbox_test/<pid:4>/...          folder 0000 = distractors (pid 0), 00-1 = junk (pid -1)
    <root>/info/train_name.txt            every training jpg name, one a line, canonical order
    <root>/info/test_name.txt
    <root>/info/tracks_train_info.mat     track_train_info int32 (8298, 4)  [start, end, pid, camid]
    <root>/info/tracks_test_info.mat      track_test_info  int32 (12180, 4)
    <root>/info/query_IDX.mat             query_IDX (1, 1980): 1-based rows of track_test_info

start / end are 1-based inclusive line numbers into the name list. Every tracklet is checked: its range lies
inside the name list and every frame name carries the row's pid, camera and one tracklet number; a row that
fails is skipped, counted and logged with its row number (a query row that fails is dropped likewise).

Query / gallery (``protocol``):
* ``mars_official`` (official MATLAB code, GLTR): gallery = all test tracklets, queries and junk included;
* ``torchreid`` (torchreid / fast-reid): gallery = test minus queries minus pid -1 (9,330 on real MARS).

The parse is cached as an ``.npz`` (no pickle) keyed by the info files' sizes and mtimes, in the first
writable of ``cache_dir``, ``<root>/.video_attn_cache``, ``~/.cache/video_attn``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from .tracklets import TrackletIndex, load_cached_arrays, save_cached_arrays

logger = logging.getLogger(__name__)

INFO_FILES = (
    "train_name.txt",
    "test_name.txt",
    "tracks_train_info.mat",
    "tracks_test_info.mat",
    "query_IDX.mat",
)
PROTOCOLS = ("mars_official", "torchreid")
_CACHE_VERSION = 1


@dataclass
class MarsSplits:
    """Parsed MARS: train and test tracklets (checked rows only) and the query positions into ``test``."""

    train: TrackletIndex
    test: TrackletIndex
    query_positions: np.ndarray  # positions in ``test`` (not metadata rows)
    num_skipped: int  # tracklet rows dropped by the consistency checks (train + test)

    def query(self) -> TrackletIndex:
        return self.test.select(self.query_positions)

    def gallery(self, protocol: str) -> TrackletIndex:
        if protocol == "mars_official":
            return self.test
        if protocol == "torchreid":
            keep = np.ones(len(self.test), dtype=bool)
            keep[self.query_positions] = False
            keep &= self.test.pids != -1
            return self.test.select(keep)
        raise ValueError(f"eval.protocol={protocol!r}; valid: {', '.join(PROTOCOLS)}")


def load_info_mat(path: Path, key: str) -> np.ndarray:
    """One variable of a MARS info .mat file, with a clear error if it is missing."""
    try:
        data = scipy.io.loadmat(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read MATLAB file: {exc}") from None
    if key not in data:
        names = [k for k in data if not k.startswith("__")]
        raise ValueError(f"{path}: variable {key!r} not found (has {names})")
    return np.asarray(data[key])


def parse_mars_name(name: str) -> tuple[int, int, int]:
    """``"0001C1T0001F001.jpg"`` -> (pid, camid, tracklet); pid ``00-1`` is -1. Raises ValueError."""
    if len(name) < 12 or name[4] != "C" or name[6] != "T" or name[11] != "F":
        raise ValueError(f"not a MARS frame name: {name!r}")
    pid_text = name[:4]
    pid = -1 if pid_text == "00-1" else int(pid_text)
    return pid, int(name[5]), int(name[7:11])


def _read_names(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _parse_names(names: list[str]) -> np.ndarray:
    """(N, 3) int64 [pid, camid, tracklet] per frame name; -999 where a name is malformed."""
    parsed = np.full((len(names), 3), -999, dtype=np.int64)  # -999 never matches a row's pid / camera
    if not names:
        return parsed
    arr = np.array(names, dtype="S")
    width = arr.dtype.itemsize
    if width >= 12 and np.all(np.char.str_len(arr) == width):
        # all names of one length (the released lists): parse the fixed-position fields as a byte matrix
        u = arr.view(np.uint8).reshape(len(arr), width)[:, :12].astype(np.int32) - ord("0")
        digits = lambda a, b: ((u[:, a:b] >= 0) & (u[:, a:b] <= 9)).all(axis=1)  # noqa: E731
        value = lambda a, b: sum(u[:, j] * 10 ** (b - 1 - j) for j in range(a, b))  # noqa: E731
        junk = (u[:, 0] == 0) & (u[:, 1] == 0) & (u[:, 2] == ord("-") - ord("0")) & (u[:, 3] == 1)
        ok = (
            (digits(0, 4) | junk)
            & (u[:, 4] == ord("C") - ord("0"))
            & digits(5, 6)
            & (u[:, 6] == ord("T") - ord("0"))
            & digits(7, 11)
            & (u[:, 11] == ord("F") - ord("0"))
        )
        parsed[ok, 0] = np.where(junk, -1, value(0, 4))[ok]
        parsed[ok, 1] = u[ok, 5]
        parsed[ok, 2] = value(7, 11)[ok]
        return parsed
    for i, name in enumerate(names):
        try:
            parsed[i] = parse_mars_name(name)
        except ValueError:
            pass
    return parsed


def _check_tracks(
    tracks: np.ndarray, names: list[str], what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate rows [start, end, pid, camid]; return (kept rows, 0-based starts, exclusive ends)."""
    if tracks.ndim != 2 or tracks.shape[1] != 4:
        raise ValueError(f"{what}: expected an (N, 4) array [start, end, pid, camid], got {tracks.shape}")
    tracks = tracks.astype(np.int64)
    parsed = _parse_names(names)
    start, end, pid, cam = tracks.T
    in_range = (start >= 1) & (end >= start) & (end <= len(names))
    # per frame of every in-range row: does it match its row? (rows may in principle overlap: gather)
    r = np.flatnonzero(in_range)
    lengths = end[r] - start[r] + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    frame = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(offsets - (start[r] - 1), lengths)
    row_of = np.repeat(np.arange(len(r)), lengths)
    first_tid = parsed[start[r] - 1, 2]
    bad = (parsed[frame, 0] != pid[r][row_of]) | (parsed[frame, 1] != cam[r][row_of])
    bad |= parsed[frame, 2] != first_tid[row_of]
    num_bad = np.add.reduceat(bad.astype(np.int64), offsets) if len(r) else np.zeros(0, np.int64)
    good = np.zeros(len(tracks), dtype=bool)
    good[r] = num_bad == 0
    skipped = []
    for row in np.flatnonzero(~good)[:20]:
        if not in_range[row]:
            reason = f"frame range [{start[row]}, {end[row]}] outside the {len(names)} names"
        else:
            seg = slice(start[row] - 1, end[row])
            p = parsed[seg]
            mism = np.flatnonzero((p[:, 0] != pid[row]) | (p[:, 1] != cam[row]) | (p[:, 2] != p[0, 2]))
            name = names[start[row] - 1 + mism[0]]
            reason = f"frame {name!r} does not match pid {pid[row]}, camera {cam[row]}, one tracklet"
        skipped.append((int(row), reason))
    for row, reason in skipped:
        logger.warning("MARS %s row %d (1-based %d) skipped: %s", what, row, row + 1, reason)
    if not good.all():
        logger.warning("MARS %s: %d of %d tracklet rows skipped", what, int((~good).sum()), len(tracks))
    rows = np.flatnonzero(good).astype(np.int64)
    return rows, start[rows] - 1, end[rows]


def _frame_paths(folder: str, names: list[str]) -> np.ndarray:
    """``folder/<name[:4]>/<name>`` for every name, as a bytes array."""
    arr = np.array(names, dtype="S") if names else np.zeros(0, dtype="S1")
    width = arr.dtype.itemsize
    if len(arr) and np.all(np.char.str_len(arr) == width):
        u = arr.view(np.uint8).reshape(len(arr), width)
        prefix = np.frombuffer(f"{folder}/".encode(), dtype=np.uint8)
        slash = np.frombuffer(b"/", dtype=np.uint8)
        n = len(arr)
        cols = [np.broadcast_to(prefix, (n, len(prefix))), u[:, :4], np.broadcast_to(slash, (n, 1)), u]
        out = np.ascontiguousarray(np.concatenate(cols, axis=1))
        return out.view(f"S{out.shape[1]}").reshape(-1)
    return np.array([f"{folder}/{n[:4]}/{n}".encode() for n in names], dtype="S")


def _cache_key(info_dir: Path) -> str:
    h = hashlib.sha1(f"mars-v{_CACHE_VERSION}".encode())
    for name in INFO_FILES:
        st = (info_dir / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _parse(info_dir: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    skipped = 0
    test_rows = None
    for split, var in (("train", "track_train_info"), ("test", "track_test_info")):
        names = _read_names(info_dir / f"{split}_name.txt")
        tracks = load_info_mat(info_dir / f"tracks_{split}_info.mat", var)
        rows, starts, ends = _check_tracks(tracks, names, f"tracks_{split}_info")
        skipped += len(tracks) - len(rows)
        folder = f"bbox_{split}"
        out[f"{split}_paths"] = _frame_paths(folder, names)
        out[f"{split}_rows"] = rows
        out[f"{split}_starts"] = starts
        out[f"{split}_ends"] = ends
        out[f"{split}_pids"] = tracks[rows, 2].astype(np.int64)
        out[f"{split}_camids"] = tracks[rows, 3].astype(np.int64)
        if split == "test":
            test_rows = rows
            num_test = len(tracks)
    query_idx = load_info_mat(info_dir / "query_IDX.mat", "query_IDX").astype(np.int64).reshape(-1)
    if query_idx.size and (query_idx.min() < 1 or query_idx.max() > num_test):
        raise ValueError(f"{info_dir / 'query_IDX.mat'}: query rows must be in 1..{num_test}")
    position_of_row = np.full(num_test, -1, dtype=np.int64)
    position_of_row[test_rows] = np.arange(len(test_rows))
    positions = position_of_row[query_idx - 1]
    if np.any(positions < 0):
        logger.warning("MARS: %d query rows dropped (tracklets skipped)", int(np.sum(positions < 0)))
    out["query_positions"] = positions[positions >= 0]
    out["num_skipped"] = np.array(skipped, dtype=np.int64)
    return out


def load_mars(root: str | Path, cache_dir: str | Path | None = None, use_cache: bool = True) -> MarsSplits:
    """Parse (or load from cache) the MARS metadata under ``root``; FileNotFoundError names a missing file."""
    root = Path(root)
    info_dir = root / "info"
    for name in INFO_FILES:
        if not (info_dir / name).is_file():
            raise FileNotFoundError(f"MARS metadata file not found: {info_dir / name} (data.root={root})")
    fname = f"mars_{_cache_key(info_dir)}.npz"
    arrays = load_cached_arrays(root, cache_dir, fname) if use_cache else None
    if arrays is None:
        arrays = _parse(info_dir)
        if use_cache:
            save_cached_arrays(root, cache_dir, fname, arrays)

    def index(split: str) -> TrackletIndex:
        return TrackletIndex(
            root, arrays[f"{split}_paths"], arrays[f"{split}_starts"], arrays[f"{split}_ends"],
            arrays[f"{split}_pids"], arrays[f"{split}_camids"], arrays[f"{split}_rows"],
        )

    return MarsSplits(index("train"), index("test"), arrays["query_positions"], int(arrays["num_skipped"]))
