"""From an opened video to the model's input: sample frame indices, decode them, transform every view.

Shared by the action datasets (one item per annotation row) and the inference API (a file, a frame folder
or an array), so a video is prepared the same way in evaluation and in prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .decoders.base import VideoReader
from .frame_sampling import FrameSampler

__all__ = ["read_views", "transform_views"]


def transform_views(
    frames: np.ndarray, clip_len: int, transform: Any, label: Any, rng: np.random.Generator
) -> tuple[Tensor, Any]:
    """Transform the ``V = len(frames) // clip_len`` consecutive clips of ``frames`` (uint8 ``(V * T, H, W,
    3)``), one transform draw per clip.

    Returns the float clip ``(T, 3, h, w)`` for a single view of a single-crop transform, else
    ``(V * C, T, 3, h, w)`` with the ``C`` crops of each clip (clip-major order), and the label as the first
    clip's transform left it (a flip can swap it).
    """
    views, first_label = [], label
    for v in range(len(frames) // clip_len):
        clip, label_v = transform(frames[v * clip_len : (v + 1) * clip_len], label, rng)
        if v == 0:
            first_label = label_v
        views.append(clip)
    if len(views) == 1:
        return views[0], first_label
    stacked = torch.stack(views)
    return stacked.reshape(-1, *stacked.shape[-4:]), first_label  # (V, [C,] T, 3, h, w) -> (V * C, T, ...)


def read_views(
    reader: VideoReader,
    sampler: FrameSampler,
    transform: Any,
    label: Any = None,
    rng: np.random.Generator | None = None,
) -> tuple[Tensor, Any]:
    """The transformed views of a whole video: ``sampler`` over ``len(reader)`` frames, the sampled frames
    decoded in one call, then :func:`transform_views`. ``rng`` (default: seeded with 0) drives every random
    choice; test samplers and transforms make none."""
    rng = np.random.default_rng(0) if rng is None else rng
    indices = sampler(len(reader), rng)
    frames = reader.get_frames(indices.reshape(-1))
    return transform_views(frames, indices.shape[1], transform, label, rng)
