"""Use a trained model: load it, name the classes of a video (also window by window along a long one), embed
ReID tracklets. The counterpart of mmaction2's ``init_recognizer`` / ``inference_recognizer`` and of
torchreid's ``FeatureExtractor``::

    from video_attn.apis import load_model, predict_long_video, predict_video

    model = load_model(checkpoint="work_dirs/synthetic/tanet_r18/checkpoints/best.pt")
    predict_video(model, "clip.mp4")        # [("move_left", 0.97), ("move_up", 0.02), ...]
    predict_long_video(model, "long.mp4", window=2.0, stride=1.0)   # [(0.0, 2.0, [...]), (1.0, 3.0, ...)]

A video is prepared by the test protocol of the model's config, through the code evaluation uses: the split
an evaluation reads (``data.test`` when its ``ann_file`` is set, else ``data.val``) gives the frame sampler
(``sampler``, ``num_clips``) and the crops (``crop``); the views' scores are averaged per ``eval.average``.
ReID tracklets follow ``eval.test_mode`` and ``data.test.crop`` as feature extraction does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from video_attn.config.loader import config_from_dict, load_config
from video_attn.config.schema import Config
from video_attn.data.clips import read_views, transform_views
from video_attn.data.datasets.action_build import action_class_names
from video_attn.data.datasets.reid_build import build_reid_sampler
from video_attn.data.datasets.tracklets import ImageListReader
from video_attn.data.decoders import ArrayReader, DecodeError, VideoReader, open_video
from video_attn.data.frame_sampling import FrameSampler, build_frame_sampler
from video_attn.data.transforms import ClipTransform, build_clip_transform
from video_attn.engine import distributed as du
from video_attn.engine.checkpoint import CheckpointError, load_checkpoint
from video_attn.engine.evaluator import autocast
from video_attn.tasks import build_task

from .evaluation import write_feature_file
from .runtime import amp_dtype_for, config_for_checkpoint, model_from_checkpoint

__all__ = [
    "WindowPrediction",
    "embed_many",
    "embed_tracklet",
    "load_model",
    "load_video_clip",
    "predict_long_video",
    "predict_video",
]

# a video file, a frame folder (named by data.frame_template) or decoded uint8 RGB frames (T, H, W, 3)
Video = str | os.PathLike | np.ndarray
# a ReID tracklet: a folder of frame images (sorted by name), a list of image paths, or frames (T, H, W, 3)
Tracklet = str | os.PathLike | Sequence[str | os.PathLike] | np.ndarray

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class WindowPrediction(NamedTuple):
    """The top-k classes of the window ``[start, end)`` (seconds) of a long video."""

    start: float
    end: float
    topk: list[tuple[str, float]]


# ---------------------------------------------------------------------------------------------- model
def load_model(
    config: str | os.PathLike | Config | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    overrides: Sequence[str] | None = None,
) -> nn.Module:
    """The model of ``checkpoint`` in eval mode, ready for :func:`predict_video` or :func:`embed_tracklet`.

    Args:
        config: a YAML config path or a :class:`Config`; None uses the config stored in the checkpoint
            (every training checkpoint holds the resolved one).
        checkpoint: a checkpoint of ``tools/train.py`` or ``tools/convert_checkpoint.py`` (read with
            ``weights_only=True``; no pretrained-weights file is needed).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        overrides: dotted ``KEY=VALUE`` config overrides, as on the command line.

    Returns the model with ``model.cfg`` (its resolved :class:`Config`) and ``model.class_names`` attached
    (action: the checkpoint's class names, else those of ``data.labels_file``, else ``"0"``, ``"1"``, ...;
    ReID: None). Raises ``CheckpointError`` / ``ConfigError`` (a ``ValueError``) naming the file or key.
    """
    if checkpoint is None:
        raise TypeError("load_model needs a checkpoint")
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    overrides = list(overrides or ())
    if config is None:
        stored = ckpt.get("config")
        if not stored:
            raise CheckpointError(f"{checkpoint} stores no config; pass the config of its training")
        cfg = config_from_dict(stored, overrides)
    elif isinstance(config, Config):
        cfg = config_from_dict(config.to_dict(), overrides)
    else:
        cfg = load_config(config, overrides)
    task = build_task(cfg)
    cfg = config_for_checkpoint(cfg, ckpt, checkpoint)
    target = _device(device)
    cfg.device = target.type
    model = model_from_checkpoint(cfg, ckpt, checkpoint, target)
    model.cfg = cfg
    model.class_names = _class_names(cfg, ckpt, checkpoint) if task.name == "action" else None
    return model


def _device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device in ("auto", "cpu", "cuda"):
        return du.resolve_device(device)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device} but torch.cuda.is_available() is False; use cpu or auto")
    return device


def _class_names(cfg: Config, ckpt: dict, checkpoint: str | os.PathLike) -> list[str]:
    names = ckpt.get("class_names")
    if names is None:
        return action_class_names(cfg, cfg.model.num_classes)
    if len(names) != cfg.model.num_classes:
        raise CheckpointError(
            f"{checkpoint} names {len(names)} classes but its model has model.num_classes="
            f"{cfg.model.num_classes}"
        )
    return [str(name) for name in names]


def _model_config(model: nn.Module, task: str, caller: str) -> Config:
    """The config :func:`load_model` attached to ``model``, checked to be one of ``task``."""
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, Config):
        raise TypeError(f"{caller} needs a model from video_attn.apis.load_model (it reads model.cfg)")
    actual = build_task(cfg).name
    if actual != task:
        kind = {"action": "an action", "reid": "a ReID"}
        hint = "embed_tracklet / embed_many" if actual == "reid" else "predict_video / predict_long_video"
        raise ValueError(
            f"{caller} needs {kind[task]} model; model.arch={cfg.model.arch} is {kind[actual]} model "
            f"(use {hint})"
        )
    return cfg


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------------- action
def _action_pipeline(cfg: Config) -> tuple[FrameSampler, ClipTransform]:
    """The frame sampler and transform of the split an evaluation of ``cfg`` reads."""
    split_cfg = cfg.data[build_task(cfg).eval_splits()[0]]
    sampler = build_frame_sampler(split_cfg, cfg.data, cfg.model.num_segments, train=False)
    return sampler, build_clip_transform(cfg.data, split_cfg, train=False)


def _open_video(cfg: Config, video: Video, backend: str | None = None) -> VideoReader:
    """A reader of ``video`` with the config's backend (or ``backend``)."""
    if isinstance(video, np.ndarray):
        return ArrayReader(video)
    return open_video(video, backend=backend or cfg.data.backend, frame_template=cfg.data.frame_template,
                      device=cfg.data.decode_device)


# The reader a long video is walked with, by configured backend. decord keeps decoding ahead on a thread of
# its own after every read (0.3-0.6 s of CPU per read, measured on a 340p H.264 file): with the reader open
# across model calls that thread takes a core from the model (TANet-R50, 2 CPU cores: 79% of
# predict_video's clip rate against 95% with PyAV). PyAV decodes only when asked and gives the same frames.
_LONG_VIDEO_BACKEND = {"decord": "pyav"}


def load_video_clip(cfg: Config, video: Video) -> Tensor:
    """The test views of ``video`` as the model of ``cfg`` sees them: float ``(V, T, 3, H, W)`` with ``V =
    num_clips x crops`` of the evaluated split. Raises ``DecodeError`` naming a video that cannot be read."""
    sampler, transform = _action_pipeline(cfg)
    with _open_video(cfg, video) as reader:
        clip, _ = read_views(reader, sampler, transform)
    return clip if clip.dim() == 5 else clip[None]


def _class_probabilities(model: nn.Module, clips: Tensor) -> np.ndarray:
    """Class probabilities ``(N, K)`` of clips ``(N, V, T, 3, H, W)``, views averaged per ``eval.average``:
    the softmax of the mean logits (``logits``) or the mean of the views' softmax (``softmax``)."""
    cfg: Config = model.cfg
    device = _model_device(model)
    with torch.no_grad(), autocast(device, amp_dtype_for(cfg, device)):
        scores = model.forward_views(clips.to(device), cfg.eval.average).float()
    probs = scores.softmax(dim=-1) if cfg.eval.average == "logits" else scores
    return probs.cpu().numpy()


def _topk(probs: np.ndarray, names: Sequence[str], k: int) -> list[tuple[str, float]]:
    if k < 1:
        raise ValueError(f"topk must be >= 1, got {k}")
    # ties go to the lower class index, as in the evaluation's ranking
    order = np.argsort(-probs, kind="stable")[: min(k, len(probs))]
    return [(names[i], float(probs[i])) for i in order]


def predict_video(model: nn.Module, video: Video, topk: int = 5) -> list[tuple[str, float]]:
    """The ``topk`` most probable classes of one video, best first: ``[(class_name, probability), ...]``.

    ``video``: a video file, a frame folder (frames named by ``data.frame_template``) or decoded uint8 RGB
    frames ``(T, H, W, 3)``. The views of the test protocol (see the module docstring) go through the model
    in one batch; the probabilities of all classes sum to 1, so the ``topk`` listed sum to at most 1.
    """
    cfg = _model_config(model, "action", "predict_video")
    probs = _class_probabilities(model, load_video_clip(cfg, video)[None])[0]
    return _topk(probs, model.class_names, topk)


def _window_spans(num_frames: int, fps: float, window: float, stride: float) -> list[tuple[int, int]]:
    """Frame ranges ``[start, stop)`` of windows of ``window`` seconds every ``stride`` seconds; the last
    window ends with the video so that its tail is covered; a video shorter than a window is one window."""
    length = max(1, round(window * fps))
    step = max(1, round(stride * fps))
    if num_frames <= length:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - length + 1, step))
    if starts[-1] + length < num_frames:
        starts.append(num_frames - length)
    return [(s, s + length) for s in starts]


def predict_long_video(
    model: nn.Module,
    video: Video,
    window: float = 2.0,
    stride: float = 1.0,
    topk: int = 5,
    batch_size: int = 1,
    fps: float | None = None,
    progress: bool = False,
) -> list[WindowPrediction]:
    """A timeline of the ``topk`` classes of every window of ``window`` seconds, one every ``stride`` seconds.

    Each window is one video to the test protocol: its frames are sampled and cropped as
    :func:`predict_video` does for a whole video. ``batch_size`` windows go through the model at once; their
    sampled frames are decoded in one reader call (forward through the batch's stretch of video, seeking over
    long gaps), so memory is bounded by the batch of windows, not by the video's length. A file configured
    for decord is read with PyAV here (the same frames): decord keeps decoding ahead on its own thread
    between reads, which takes CPU from the model. The default batch size, 1,
    suits the CPU, where a larger batch is slower per clip (TANet-R50: 8 windows a call took 1.7x as long
    per window, ``benchmarks/inference.py``); on a GPU a batch of 8 or more keeps the device busy.

    Args:
        video: a video file, a frame folder or decoded frames ``(T, H, W, 3)``.
        window, stride: in seconds (> 0). The last window is aligned to the video's end.
        fps: the frame rate; required for frame folders and arrays, which carry none (default: the
            container's).
        progress: show a progress bar over the windows (stderr).

    Returns ``[WindowPrediction(start, end, [(class_name, probability), ...]), ...]`` in time order.
    """
    cfg = _model_config(model, "action", "predict_long_video")
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be > 0 seconds, got window={window}, stride={stride}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sampler, transform = _action_pipeline(cfg)
    rng = np.random.default_rng(0)  # test samplers and crops draw nothing; the readers' API wants one
    timeline: list[WindowPrediction] = []
    backend = _LONG_VIDEO_BACKEND.get(cfg.data.backend, cfg.data.backend)
    with _open_video(cfg, video, backend) as reader:
        rate = float(fps) if fps else reader.fps
        if rate <= 0:
            raise ValueError(f"{reader.path}: unknown frame rate (a frame folder or an array); pass fps")
        spans = _window_spans(len(reader), rate, window, stride)
        batches = range(0, len(spans), batch_size)
        for first in tqdm(batches, desc="windows", unit="batch", delay=1.0, disable=not progress):
            batch = spans[first : first + batch_size]
            indices = [start + sampler(stop - start, rng) for start, stop in batch]  # (V, T) each
            wanted, inverse = np.unique(np.concatenate([i.reshape(-1) for i in indices]), return_inverse=True)
            decoded = reader.get_frames(wanted)
            clips, offset = [], 0
            for idx in indices:
                frames = decoded[inverse[offset : offset + idx.size]]
                clip, _ = transform_views(frames, idx.shape[1], transform, None, rng)
                clips.append(clip if clip.dim() == 5 else clip[None])
                offset += idx.size
            probs = _class_probabilities(model, torch.stack(clips))
            timeline += [
                WindowPrediction(start / rate, stop / rate, _topk(p, model.class_names, topk))
                for (start, stop), p in zip(batch, probs)
            ]
    return timeline


# ----------------------------------------------------------------------------------------------- ReID
def _tracklet_reader(frames: Tracklet) -> VideoReader:
    if isinstance(frames, np.ndarray):
        return ArrayReader(frames)
    if isinstance(frames, (str, os.PathLike)):
        folder = Path(frames)
        if not folder.is_dir():
            raise DecodeError(f"{folder}: no such tracklet folder")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DecodeError(f"{folder}: no frame images ({', '.join(IMAGE_SUFFIXES)})")
        return ImageListReader(paths)
    return ImageListReader(list(frames))


def _embed(model: nn.Module, cfg: Config, frames: Tracklet) -> tuple[np.ndarray, str, int]:
    """The raw embedding ``(D,)`` of one tracklet (dense test mode: the mean over its clips, as feature
    extraction computes it), the tracklet's first frame path ("" for an array) and its length."""
    sampler = build_reid_sampler(cfg, train=False)
    transform = build_clip_transform(cfg.data, cfg.data.test, train=False)
    with _tracklet_reader(frames) as reader:
        clip, _ = read_views(reader, sampler, transform)
        path = "" if isinstance(reader, ArrayReader) else reader.path
        length = len(reader)
    device = _model_device(model)
    with torch.no_grad(), autocast(device, amp_dtype_for(cfg, device)):
        emb = model((clip if clip.dim() == 5 else clip[None]).to(device))  # (V, D)
    return emb.float().mean(dim=0).cpu().numpy(), path, length


def embed_tracklet(model: nn.Module, frames: Tracklet) -> np.ndarray:
    """The L2-normalised embedding ``(D,)`` float32 of one ReID tracklet.

    ``frames``: a folder of frame images (in file-name order), a list of image paths in temporal order, or
    uint8 RGB frames ``(T, H, W, 3)``. Frames are selected by ``eval.test_mode`` and resized by
    ``data.test.crop``, the embedding is the model's test feature: the row ``tools/extract_features.py``
    writes for the same tracklet, normalised.
    """
    cfg = _model_config(model, "reid", "embed_tracklet")
    feature, _, _ = _embed(model, cfg, frames)
    return (feature / max(float(np.linalg.norm(feature)), 1e-12)).astype(np.float32)


def embed_many(
    model: nn.Module,
    tracklets: Sequence[Tracklet],
    out: str | os.PathLike | None = None,
    pids: Sequence[int] | None = None,
    camids: Sequence[int] | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Embed ``tracklets`` (each as :func:`embed_tracklet` takes it) into the arrays of a feature file.

    The arrays are those of ``tools/extract_features.py``, which ``tools/retrieve.py`` and
    :func:`video_attn.retrieval.load_features` read: ``features`` float32 ``(N, D)`` (not normalised, as
    extracted; retrieval normalises them), ``paths`` (first frame; "" for arrays), ``num_frames``, ``valid``,
    ``index``, and ``pids`` / ``camids`` when given (needed to mark matches and to evaluate). ``out``: the
    ``.npz`` to write (atomically). ``progress``: a progress bar over the tracklets (stderr).
    """
    cfg = _model_config(model, "reid", "embed_many")
    n = len(tracklets)
    if n == 0:
        raise ValueError("embed_many needs at least one tracklet")
    rows = [_embed(model, cfg, t) for t in tqdm(tracklets, desc="tracklets", delay=1.0, disable=not progress)]
    arrays: dict[str, np.ndarray] = {
        "features": np.stack([r[0] for r in rows]).astype(np.float32),
        "paths": np.asarray([r[1] for r in rows], dtype=np.str_),
        "num_frames": np.asarray([r[2] for r in rows], dtype=np.int64),
        "valid": np.ones(n, dtype=bool),
        "index": np.arange(n, dtype=np.int64),
    }
    for name, values in (("pids", pids), ("camids", camids)):
        if values is not None:
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} tracklets")
            arrays[name] = np.asarray(values, dtype=np.int64)
    if out is not None:
        write_feature_file(out, arrays)
    return arrays
