"""One clip of a video or tracklet as a model sees it, together with the frames to draw on.

Visualisation (``tools/visualize.py``) overlays maps on the frames the model saw: after the test protocol's
frame sampling, resizing and cropping, but before normalisation (whose clip-mean subtraction cannot be
undone for display). :func:`load_visual_clip` runs the evaluation's sampler and transform once for the
model's input and once, with normalisation switched off, for the pictures.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from video_attn.config.schema import Config
from video_attn.data.frame_sampling import EvenlySampler, FrameSampler, build_frame_sampler
from video_attn.data.transforms import build_clip_transform
from video_attn.tasks import build_task

from .inference import Tracklet, Video, _open_video, _tracklet_reader

__all__ = ["VisualClip", "load_visual_clip"]

MULTI_CROPS = ("three", "ten")


class VisualClip(NamedTuple):
    """A clip ready for the model and for drawing.

    Attributes:
        clip: float ``(T, 3, H, W)``, normalised as the model's input (``clip[None]`` is a batch of one).
        frames: uint8 ``(T, H, W, 3)`` RGB, the same pixels before normalisation.
        indices: int64 ``(T,)``, the frame numbers sampled from the video or tracklet.
        num_frames: frames in the video or tracklet.
    """

    clip: Tensor
    frames: np.ndarray
    indices: np.ndarray
    num_frames: int


def _pipeline(cfg: Config) -> tuple[FrameSampler, object, object]:
    """The sampler, the model's transform and the drawing transform (no normalisation) of one view."""
    task = build_task(cfg)
    if task.name == "action":
        split_cfg = cfg.data[task.eval_splits()[0]]
        sampler = build_frame_sampler(split_cfg, cfg.data, cfg.model.num_segments, train=False)
    else:
        # a tracklet of any length: num_segments frames spread over it (eval.test_mode=evenly)
        split_cfg = cfg.data.test
        sampler = EvenlySampler(cfg.model.num_segments, mode="center")
    if split_cfg.crop in MULTI_CROPS:
        split_cfg = dataclasses.replace(split_cfg, crop="center")  # one picture: the centre crop
    plain = copy.deepcopy(cfg.data)
    plain.mean, plain.std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    if hasattr(plain, "subtract_clip_mean"):
        plain.subtract_clip_mean = False
    return (
        sampler,
        build_clip_transform(cfg.data, split_cfg, train=False, flip_label_map={}),
        build_clip_transform(plain, split_cfg, train=False, flip_label_map={}),
    )


def load_visual_clip(cfg: Config, source: Video | Tracklet) -> VisualClip:
    """The first test clip of ``source`` as the model of ``cfg`` sees it (action: the sampler of the
    evaluated split, the centre crop where the split has several; ReID: ``model.num_segments`` frames
    spread evenly over the tracklet, ``data.test.crop``).

    ``source``: action, a video file, a frame folder or uint8 frames ``(T, H, W, 3)``; ReID, a folder of
    frame images, a list of image paths or uint8 frames. Raises ``DecodeError`` naming what cannot be read.
    """
    sampler, transform, plain = _pipeline(cfg)
    reid = build_task(cfg).name != "action"
    rng = np.random.default_rng(0)  # test samplers and crops draw nothing; the API wants a generator
    with _tracklet_reader(source) if reid else _open_video(cfg, source) as reader:
        num_frames = len(reader)
        indices = sampler(num_frames, rng)[0]
        decoded = reader.get_frames(indices)
    clip, _ = transform(decoded, None, rng)
    shown, _ = plain(decoded, None, rng)
    frames = (shown * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return VisualClip(clip, np.ascontiguousarray(frames), indices.astype(np.int64), num_frames)
