"""A synthetic action dataset that only temporal models can solve: the direction an object moves.

Every video shows one object over a static background; the class is the direction it moves (left, right,
up, down; then the diagonals for up to 8 classes). By default (the quick start's data) the object has a
random shape, colour and size, the background is a dark smooth texture and the object bright (one edge
polarity), and the object moves 60-90% of the frame width over the clip on a torus (it leaves one edge
and re-enters at the opposite one) from a uniformly random start, so the position in any single frame is
uniform for every class: the distribution of a single frame is identical across classes and a
frame-averaging model (TSN) stays at chance, while a model that compares frames (TAM, TSM) can reach ~100%.
:class:`MotionStyle` varies all of it (shape, size, speed, straight or wrapping paths, noise or flat
backgrounds, textured objects) so that claims are tested on more than one kind of data.

Layout written by :func:`make_action_dataset` (the generic list format of ``video_list`` datasets)::

    DIR/videos/<split>_<i:05d>.mp4   H.264 (libx264, yuv420p)
    DIR/train.txt, DIR/val.txt      "videos/<name>.mp4 <label>" per line
    DIR/classes.txt                 one class name a line, in label order
    DIR/flip_pairs.txt              "a b" per line: the classes a horizontal flip swaps (left <-> right, ...),
                                    read through data.flip_pairs_file
    DIR/generator.json              the arguments that made the data
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

__all__ = ["BACKGROUNDS", "CLASS_NAMES", "SHAPES", "TEXTURES", "TRAJECTORIES", "MotionStyle", "flip_pairs",
           "make_action_dataset", "moving_object_masks", "render_moving_object", "video_object_masks",
           "write_h264"]

CLASS_NAMES = ("move_left", "move_right", "move_up", "move_down",
               "move_up_left", "move_up_right", "move_down_left", "move_down_right")
# (dy, dx) per class, image rows growing downwards
_DIRECTIONS = ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))


def flip_pairs(num_classes: int) -> list[tuple[int, int]]:
    """The class pairs ``(a, b)``, ``a < b``, whose directions are mirror images under a horizontal flip."""
    return [(a, b) for a in range(num_classes) for b in range(a + 1, num_classes)
            if _DIRECTIONS[a][0] == _DIRECTIONS[b][0] and _DIRECTIONS[a][1] == -_DIRECTIONS[b][1] != 0]


def write_h264(path: str | os.PathLike | BinaryIO, frames: np.ndarray | Iterable[np.ndarray],
               fps: float | Fraction = 25, crf: int = 18, gop: int | None = None, preset: str = "veryfast",
               container_format: str | None = None) -> int:
    """Encode uint8 RGB frames (even H and W) as H.264 / yuv420p with PyAV's libx264; returns the frame count.

    ``frames``: an array (T, H, W, 3) or any iterable of (H, W, 3) frames of one size, encoded as they come
    (a long video never sits in memory). ``path``: a file name, or a binary file object when
    ``container_format`` names the container (e.g. ``"mp4"``). ``fps``: an int, a Fraction (30000/1001) or
    a float (turned into the nearest fraction with denominator <= 1001).
    """
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to encode")
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames (H, W, 3), got {first.dtype} {first.shape}")
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {height}x{width}")
    rate = fps if isinstance(fps, (int, Fraction)) else Fraction(fps).limit_denominator(1001)
    count = 0
    with av.open(path if container_format else os.fspath(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": preset}
        for frame in itertools.chain([first], frames):
            frame = np.asarray(frame)
            if frame.shape != first.shape or frame.dtype != np.uint8:
                raise ValueError(f"frame {count} is {frame.dtype} {frame.shape}, frame 0 uint8 {first.shape}")
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
        for packet in stream.encode():
            container.mux(packet)
    return count


SHAPES = ("random", "square", "disc", "triangle", "cross")
BACKGROUNDS = ("smooth", "noise", "uniform")
TRAJECTORIES = ("wrap", "straight")
TEXTURES = ("solid", "noise")


@dataclass(frozen=True)
class MotionStyle:
    """What the videos look like and how the object moves; the defaults make the quick start's data.

    - ``shape``: the object's shape, one of :data:`SHAPES` (``"random"`` draws one per video).
    - ``object_size``: (min, max) side of the object's bounding box in pixels;
      ``None`` is size/5 to 3 size/10.
    - ``travel``: (min, max) distance the object covers over the clip, as a fraction of the frame side (its
      speed, given the number of frames).
    - ``trajectory``: ``"wrap"`` moves on a torus from a uniformly random start (leaving one edge, re-entering
      at the opposite one: every single frame has the same distribution for every class); ``"straight"``
      keeps the object inside the frame for the whole clip (no wrap-around).
    - ``background``: ``"smooth"`` is a dark two-colour texture under a bright object (one edge polarity);
      ``"noise"`` a static per-pixel noise texture on a uniform colour; ``"uniform"`` one flat colour. With
      ``"noise"`` and ``"uniform"`` the object's colour differs from the background's by 64-192 per channel,
      brighter or darker.
    - ``object_texture``: ``"solid"`` (one colour) or ``"noise"`` (a static per-pixel texture that moves with
      the object).
    """

    shape: str = "random"
    object_size: tuple[int, int] | None = None
    travel: tuple[float, float] = (0.6, 0.9)
    trajectory: str = "wrap"
    background: str = "smooth"
    object_texture: str = "solid"

    def __post_init__(self) -> None:
        for key, allowed in (("shape", SHAPES), ("trajectory", TRAJECTORIES), ("background", BACKGROUNDS),
                             ("object_texture", TEXTURES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.object_size is not None and not 2 <= self.object_size[0] <= self.object_size[1]:
            raise ValueError(f"object_size must be (min, max) with 2 <= min <= max, got {self.object_size}")
        if not 0 < self.travel[0] <= self.travel[1] <= 1:
            raise ValueError(f"travel must be (min, max) with 0 < min <= max <= 1, got {self.travel}")


_NOISE_STD = 24.0  # per-pixel noise of the "noise" textures, in 8-bit levels


def _smooth_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth two-colour texture: coarse random noise blended between two random colours."""
    cells = int(rng.integers(2, 6))
    coarse = rng.random((cells + 1, cells + 1))
    # Bilinear upsampling of the coarse grid to the frame.
    pos = np.linspace(0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    frac = pos - i0
    rows = coarse[i0] * (1 - frac)[:, None] + coarse[i0 + 1] * frac[:, None]
    field = rows[:, i0] * (1 - frac)[None, :] + rows[:, i0 + 1] * frac[None, :]
    # Dark colours: the object is always brighter, so its edges have one contrast polarity in every video.
    c1, c2 = rng.integers(0, 110, 3), rng.integers(0, 110, 3)
    return (c1 * field[..., None] + c2 * (1 - field[..., None])).astype(np.uint8)


def _noisy(rng: np.random.Generator, colour: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (*shape, 3): ``colour`` plus static Gaussian per-pixel noise."""
    return np.clip(colour + rng.normal(0.0, _NOISE_STD, (*shape, 3)), 0, 255).astype(np.uint8)


def _shape_mask(kind: int, side: int) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side] + 0.5
    if kind == 0:  # square
        return np.ones((side, side), dtype=bool)
    if kind == 1:  # disc
        return (yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= (side / 2) ** 2
    if kind == 2:  # triangle
        return np.abs(xx - side / 2) <= yy / 2
    third = side / 3  # cross
    return (np.abs(yy - side / 2) <= third / 1.5) | (np.abs(xx - side / 2) <= third / 1.5)


def _straight_start(rng: np.random.Generator, direction: np.ndarray, travel: float, room: int) -> np.ndarray:
    """A start (row, col) from which ``travel`` pixels along ``direction`` stay within [0, room]."""
    low = np.where(direction < 0, travel, 0.0)
    high = np.where(direction > 0, room - travel, room)
    return low + rng.random(2) * (high - low)


def render_moving_object(rng: np.random.Generator, label: int, num_frames: int, size: int = 64,
                         style: MotionStyle = MotionStyle()) -> np.ndarray:
    """uint8 (num_frames, size, size, 3): an object moving in direction ``label`` (see module docstring)."""
    return _render(rng, label, num_frames, size, style)[0]


def moving_object_masks(rng: np.random.Generator, label: int, num_frames: int, size: int = 64,
                        style: MotionStyle = MotionStyle()) -> np.ndarray:
    """bool (num_frames, size, size): where the object is in each frame :func:`render_moving_object` draws.

    Makes the same draws from ``rng``: a generator in the state ``render_moving_object`` got gives the masks
    of exactly its frames (the object's pixels, wrap-around included).
    """
    return _render(rng, label, num_frames, size, style)[1]


def _render(rng: np.random.Generator, label: int, num_frames: int, size: int,
            style: MotionStyle) -> tuple[np.ndarray, np.ndarray]:
    """The frames of :func:`render_moving_object` and the object's masks (bool (num_frames, size, size))."""
    if not 0 <= label < len(_DIRECTIONS):
        raise ValueError(f"label must be in [0, {len(_DIRECTIONS)}), got {label}")
    if style.background == "smooth":
        background = _smooth_background(rng, size)
    else:
        base = rng.integers(0, 256, 3)
        background = _noisy(rng, base, (size, size)) if style.background == "noise" else \
            np.broadcast_to(base.astype(np.uint8), (size, size, 3))
    low, high = style.object_size or (max(4, size // 5), max(5, size * 3 // 10))
    side = min(int(rng.integers(low, high + 1)), size)
    kind = int(rng.integers(4)) if style.shape == "random" else SHAPES.index(style.shape) - 1
    mask = _shape_mask(kind, side)
    if style.background == "smooth":
        colour = rng.integers(150, 256, 3)
    else:
        colour = (base + rng.integers(64, 193, 3)) % 256
    direction = np.asarray(_DIRECTIONS[label], dtype=np.float64)
    if style.trajectory == "wrap":
        start = rng.random(2) * size  # uniform on the torus: any single frame looks the same for every class
        travel = rng.uniform(*style.travel) * size
    else:
        travel = min(rng.uniform(*style.travel) * size, size - side)
        start = _straight_start(rng, direction, travel, size - side)
    step = travel / max(num_frames - 1, 1)
    texture = _noisy(rng, colour, (side, side)) if style.object_texture == "noise" else None
    frames = np.repeat(background[None], num_frames, axis=0)
    masks = np.zeros((num_frames, size, size), dtype=bool)
    for t in range(num_frames):
        y0, x0 = np.round(start + direction * step * t).astype(int)
        rows = (y0 + np.arange(side)) % size
        cols = (x0 + np.arange(side)) % size
        patch = frames[t][np.ix_(rows, cols)]
        patch[mask] = colour if texture is None else texture[mask]
        frames[t][np.ix_(rows, cols)] = patch
        masks[t][np.ix_(rows, cols)] = mask
    return frames, masks


_SPLITS = ("train", "val")


def _video_rng(seed: int, split: str, index: int, min_frames: int, max_frames: int
               ) -> tuple[np.random.Generator, int]:
    """The generator of video ``index`` of ``split`` and its frame count, as :func:`make_action_dataset`
    draws them."""
    rng = np.random.default_rng([seed, _SPLITS.index(split), index])
    return rng, int(rng.integers(min_frames, max_frames + 1))


def video_object_masks(split: str, index: int, label: int, seed: int = 0, min_frames: int = 16,
                       max_frames: int = 24, size: int = 64,
                       style: MotionStyle = MotionStyle()) -> np.ndarray:
    """bool (num_frames, size, size): the object's masks in ``DIR/videos/<split>_<index:05d>.mp4`` written by
    :func:`make_action_dataset` with these arguments (``label``: the video's label in ``DIR/<split>.txt``).
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    rng, num_frames = _video_rng(seed, split, index, min_frames, max_frames)
    return moving_object_masks(rng, label, num_frames, size, style)


def make_action_dataset(out_dir: str | os.PathLike, seed: int = 0, num_classes: int = 4,
                        train_per_class: int = 256, val_per_class: int = 16, min_frames: int = 16,
                        max_frames: int = 24, size: int = 64, fps: int = 25,
                        style: MotionStyle = MotionStyle()) -> dict[str, int]:
    """Write the dataset (layout in the module docstring); returns the number of videos per split.

    Deterministic: the same arguments give the same pixels. ``size`` must be even (yuv420p). ``style``: the
    look and motion of the videos (:class:`MotionStyle`; its defaults give the quick start's data).
    """
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in [2, {len(CLASS_NAMES)}], got {num_classes}")
    if not 2 <= min_frames <= max_frames:
        raise ValueError(f"need 2 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    if size < 16 or size % 2:
        raise ValueError(f"size must be even and >= 16, got {size}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split_id, (split, per_class) in enumerate(zip(_SPLITS, (train_per_class, val_per_class))):
        labels = np.repeat(np.arange(num_classes), per_class)
        np.random.default_rng([seed, split_id]).shuffle(labels)
        lines = []
        for i, label in enumerate(labels.tolist()):
            rng, num_frames = _video_rng(seed, split, i, min_frames, max_frames)
            name = f"videos/{split}_{i:05d}.mp4"
            write_h264(out / name, render_moving_object(rng, label, num_frames, size, style), fps=fps)
            lines.append(f"{name} {label}\n")
        (out / f"{split}.txt").write_text("".join(lines))
        counts[split] = len(lines)
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in CLASS_NAMES[:num_classes]))
    # the flip pairs live with the data, not in a config that could be pointed at other data
    (out / "flip_pairs.txt").write_text("# classes a horizontal flip swaps (data.flip_pairs_file)\n"
                                        + "".join(f"{a} {b}\n" for a, b in flip_pairs(num_classes)))
    generator = {"seed": seed, "num_classes": num_classes, "train_per_class": train_per_class,
                 "val_per_class": val_per_class, "min_frames": min_frames, "max_frames": max_frames,
                 "size": size, "fps": fps, **asdict(style)}
    (out / "generator.json").write_text(json.dumps(generator, indent=1) + "\n")
    return counts
