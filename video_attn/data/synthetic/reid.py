"""A small synthetic video-ReID dataset in the exact MARS layout (for the quick start, demos and tests).

``make_reid_dataset(out_dir, seed)`` writes::

    out_dir/bbox_train/<pid:4>/<pid>C<cam>T<tracklet:4>F<frame:3>.jpg
    out_dir/bbox_test/<pid:4>/...        (0000: distractors, pid 0; 00-1: junk, pid -1)
    out_dir/info/train_name.txt, test_name.txt
    out_dir/info/tracks_train_info.mat   track_train_info int32 (N, 4) [start, end, pid, camid], 1-based
    out_dir/info/tracks_test_info.mat    track_test_info  int32 (M, 4)
    out_dir/info/query_IDX.mat           query_IDX uint16 (1, Q), 1-based rows of track_test_info

with the variable names, dtypes and shapes of the released files. Identities are stick figures with their
own clothes (upper / lower colours, a stripe / check pattern, hair colour, body size) and walking motion
(drift speed, step rate); each camera shifts the appearance (gain, tint, background, noise). 16 training
and 16 test identities, each seen by 2-3 of 6 cameras with 2-3 tracklets of 8-24 frames per camera, plus
distractor and junk tracklets; images are 64x32 JPEGs. One query per (test identity, camera) among
identities seen by at least two cameras. Deterministic for a given seed; takes a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

HEIGHT, WIDTH = 64, 32
NUM_CAMERAS = 6
PATTERNS = ("solid", "hstripes", "vstripes", "checks")


@dataclass
class _Identity:
    upper: np.ndarray
    lower: np.ndarray
    accent: np.ndarray
    hair: np.ndarray
    pattern: str
    width: int
    speed: float
    step_rate: float


@dataclass
class _Camera:
    gain: float
    tint: np.ndarray
    background: np.ndarray
    noise: float


def _identity(rng: np.random.Generator) -> _Identity:
    return _Identity(
        upper=rng.integers(20, 236, size=3).astype(np.float32),
        lower=rng.integers(20, 236, size=3).astype(np.float32),
        accent=rng.integers(0, 256, size=3).astype(np.float32),
        hair=rng.integers(0, 120, size=3).astype(np.float32),
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        width=int(rng.integers(10, 15)),
        speed=float(rng.uniform(-1.2, 1.2)),
        step_rate=float(rng.uniform(0.25, 0.7)),
    )


def _camera(rng: np.random.Generator) -> _Camera:
    return _Camera(
        gain=float(rng.uniform(0.75, 1.2)),
        tint=rng.uniform(-20, 20, size=3).astype(np.float32),
        background=rng.integers(60, 200, size=3).astype(np.float32),
        noise=float(rng.uniform(3, 10)),
    )


def _render(
    ident: _Identity, cam: _Camera, t: int, x0: float, phase: float, rng: np.random.Generator
) -> np.ndarray:
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    img[:] = cam.background
    img += np.linspace(-15, 15, HEIGHT, dtype=np.float32)[:, None, None]  # floor-to-ceiling shading
    cx = x0 + ident.speed * t
    cx = WIDTH / 2 + ((cx - WIDTH / 2 + 6) % 12) - 6  # stay inside the crop, as a tracker's box would
    bob = int(round(np.sin(phase + t * ident.step_rate * 2) * 1.0))
    half = ident.width // 2
    left, right = int(cx) - half, int(cx) + half
    top = 4 + bob
    # head and hair
    img[top : top + 9, int(cx) - 3 : int(cx) + 3] = (224, 180, 150)
    img[top : top + 3, int(cx) - 3 : int(cx) + 3] = ident.hair
    # torso with the identity's pattern
    t0, t1 = top + 9, top + 31
    torso = np.empty((t1 - t0, right - left, 3), dtype=np.float32)
    torso[:] = ident.upper
    yy, xx = np.mgrid[0 : t1 - t0, 0 : right - left]
    if ident.pattern == "hstripes":
        torso[(yy // 3) % 2 == 1] = ident.accent
    elif ident.pattern == "vstripes":
        torso[(xx // 2) % 2 == 1] = ident.accent
    elif ident.pattern == "checks":
        torso[((yy // 4) + (xx // 4)) % 2 == 1] = ident.accent
    img[t0:t1, max(left, 0) : max(left, 0) + torso.shape[1]] = torso[:, : WIDTH - max(left, 0)]
    # legs swing with the step phase
    swing = int(round(np.sin(phase + t * ident.step_rate) * 3))
    leg_top = t1
    for sign in (-1, 1):
        lx = int(cx) + sign * 3 + sign * swing // 2
        img[leg_top : HEIGHT - 2, max(lx - 2, 0) : max(lx + 2, 0)] = ident.lower
    img = img * cam.gain + cam.tint + rng.normal(0, cam.noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _pid_folder(pid: int) -> str:
    return "00-1" if pid == -1 else f"{pid:04d}"


class _SplitWriter:
    def __init__(self, root: Path, folder: str) -> None:
        self.root = root
        self.folder = folder
        self.names: list[str] = []
        self.rows: list[tuple[int, int, int, int]] = []
        self.counters: dict[tuple[int, int], int] = {}

    def add(self, pid: int, cam: int, frames: list[np.ndarray]) -> int:
        key = (pid, cam)
        self.counters[key] = self.counters.get(key, 0) + 1
        tracklet = self.counters[key]
        folder = self.root / self.folder / _pid_folder(pid)
        folder.mkdir(parents=True, exist_ok=True)
        start = len(self.names) + 1
        for f, frame in enumerate(frames, start=1):
            name = f"{_pid_folder(pid)}C{cam}T{tracklet:04d}F{f:03d}.jpg"
            Image.fromarray(frame).save(folder / name, quality=90)
            self.names.append(name)
        self.rows.append((start, len(self.names), pid, cam))
        return len(self.rows) - 1


def make_reid_dataset(out_dir: Path, seed: int = 0, num_train_ids: int = 16, num_test_ids: int = 16) -> None:
    """Write the synthetic MARS-layout dataset to ``out_dir`` (see the module docstring)."""
    out_dir = Path(out_dir)
    (out_dir / "info").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cameras = [_camera(rng) for _ in range(NUM_CAMERAS)]
    train = _SplitWriter(out_dir, "bbox_train")
    test = _SplitWriter(out_dir, "bbox_test")

    def tracklet(ident: _Identity, cam: int) -> list[np.ndarray]:
        length = int(rng.integers(8, 25))
        x0, phase = float(rng.uniform(10, 22)), float(rng.uniform(0, 2 * np.pi))
        return [_render(ident, cameras[cam - 1], t, x0, phase, rng) for t in range(length)]

    queries: list[int] = []
    pids = rng.permutation(np.arange(1, 200))[: num_train_ids + num_test_ids]
    train_pids, test_pids = sorted(pids[:num_train_ids].tolist()), sorted(pids[num_train_ids:].tolist())
    for writer, split_pids in ((train, train_pids), (test, test_pids)):
        for pid in split_pids:
            ident = _identity(rng)
            cams = sorted(
                rng.choice(np.arange(1, NUM_CAMERAS + 1), size=int(rng.integers(2, 4)), replace=False)
            )
            for cam in cams:
                rows = [
                    writer.add(pid, int(cam), tracklet(ident, int(cam)))
                    for _ in range(int(rng.integers(2, 4)))
                ]
                if writer is test:
                    queries.append(rows[int(rng.integers(len(rows)))])
    # distractors (pid 0: people who are not test identities) and junk (pid -1: bad detections)
    for _ in range(6):
        cam = int(rng.integers(1, NUM_CAMERAS + 1))
        test.add(0, cam, tracklet(_identity(rng), cam))
    for _ in range(4):
        cam = int(rng.integers(1, NUM_CAMERAS + 1))
        length = int(rng.integers(8, 17))
        noise = [rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(length)]
        test.add(-1, cam, noise)

    for writer, split, var in ((train, "train", "track_train_info"), (test, "test", "track_test_info")):
        (out_dir / "info" / f"{split}_name.txt").write_text("\n".join(writer.names) + "\n")
        scipy.io.savemat(
            str(out_dir / "info" / f"tracks_{split}_info.mat"), {var: np.asarray(writer.rows, dtype=np.int32)}
        )
    query_idx = (np.sort(np.asarray(queries)) + 1).astype(np.uint16)[None, :]
    scipy.io.savemat(str(out_dir / "info" / "query_IDX.mat"), {"query_IDX": query_idx})
