"""Clip transforms: one random draw per clip, applied identically to every frame.

Frames arrive as the decoder returns them, uint8 ``(T, H, W, 3)``. They are viewed (no copy) as a uint8
``(T, 3, H, W)`` tensor in channels-last memory, which is the layout torch's fast uint8 antialiased resize
wants; crops are slices, resizing runs on uint8, and normalisation to float happens once at the end.

Every op is a callable ``op(clip, label, rng) -> (clip, label)`` on ``(..., T, 3, H, W)`` tensors; multi-crop
ops add a leading views axis. :class:`ClipTransform` chains them and is what datasets call:
``transform(frames, label, rng) -> (Tensor, label)``, every random choice drawn from ``rng`` (the item's
generator, see ``video_attn.data.build``).

Train crops follow TSN / TSM / TANet (``GroupMultiScaleCrop`` + ``GroupRandomHorizontalFlip``); test crops
follow the TSM test script (resize short side + centre crop, three full-height crops, ten crops).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

__all__ = ["CenterCrop", "ClipTransform", "MultiScaleCrop", "Normalize", "RandomErasing",
           "RandomHorizontalFlip", "RandomResizedCrop", "Resize", "ResizeShortSide", "SubtractClipMean",
           "TenCrop", "ThreeCrop",
           "build_clip_transform", "frames_to_tensor", "symmetric_label_map"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frames_to_tensor(frames: np.ndarray | Tensor) -> Tensor:
    """uint8 ``(T, H, W, 3)`` array -> uint8 ``(T, 3, H, W)`` tensor view in channels-last memory."""
    clip = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if clip.dim() != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(clip.shape)}")
    if clip.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames, got {clip.dtype}")
    return clip.permute(0, 3, 1, 2)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"a size is one int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _resize(clip: Tensor, height: int, width: int) -> Tensor:
    if clip.shape[-2:] == (height, width):
        return clip
    lead = clip.shape[:-3]
    flat = clip.reshape(-1, *clip.shape[-3:]) if len(lead) != 1 else clip
    out = TF.resize(flat, [height, width], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return out.reshape(*lead, *out.shape[-3:])


def _crop(clip: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    return clip[..., top:top + height, left:left + width]


class MultiScaleCrop:
    """TSN's multi-scale crop (Wang et al., TSN ECCV'16; ``GroupMultiScaleCrop``), then resize to ``size``.

    Crop sides are ``scales`` times the short side (a side within 3 px of the output is snapped to it);
    height and width scales may differ by at most ``max_distort`` steps. The position is one of 5 fixed
    ones (4 corners + centre) or, with ``more_fix_crop``, 13 (plus edge midpoints and quarter points);
    ``fix_crop=False`` draws it uniformly instead.
    """

    def __init__(self, size: int | Sequence[int], scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
                 max_distort: int = 1, fix_crop: bool = True, more_fix_crop: bool = True) -> None:
        self.size = _pair(size)
        self.scales = tuple(scales)
        self.max_distort = max_distort
        self.fix_crop = fix_crop
        self.more_fix_crop = more_fix_crop

    def _offsets(self, height: int, width: int, crop_h: int, crop_w: int) -> list[tuple[int, int]]:
        h_step, w_step = (height - crop_h) // 4, (width - crop_w) // 4
        steps = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]  # (row, column) in quarter steps
        if self.more_fix_crop:
            steps += [(2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
        return [(r * h_step, c * w_step) for r, c in steps]

    def params(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(top, left, crop height, crop width) for a ``height`` x ``width`` frame."""
        base = min(height, width)
        sides = [int(base * s) for s in self.scales]
        crop_hs = [self.size[0] if abs(s - self.size[0]) < 3 else s for s in sides]
        crop_ws = [self.size[1] if abs(s - self.size[1]) < 3 else s for s in sides]
        pairs = [(h, w) for i, h in enumerate(crop_hs) for j, w in enumerate(crop_ws)
                 if abs(i - j) <= self.max_distort]
        crop_h, crop_w = pairs[rng.integers(len(pairs))]
        crop_h, crop_w = min(crop_h, height), min(crop_w, width)
        if self.fix_crop:
            offsets = self._offsets(height, width, crop_h, crop_w)
            top, left = offsets[rng.integers(len(offsets))]
        else:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
        return top, left, crop_h, crop_w

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        top, left, crop_h, crop_w = self.params(clip.shape[-2], clip.shape[-1], rng)
        return _resize(_crop(clip, top, left, crop_h, crop_w), *self.size), label


class RandomResizedCrop:
    """Inception-style random resized crop (area ``scale``, aspect ``ratio``), as torchvision's, per clip."""

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        self.size = _pair(size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)

    def params(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            crop_w = round(math.sqrt(target * aspect))
            crop_h = round(math.sqrt(target / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                top = int(rng.integers(0, height - crop_h + 1))
                left = int(rng.integers(0, width - crop_w + 1))
                return top, left, crop_h, crop_w
        # Fallback (as torchvision): central crop with the aspect clamped into range.
        aspect = width / height
        if aspect < min(self.ratio):
            crop_w, crop_h = width, round(width / min(self.ratio))
        elif aspect > max(self.ratio):
            crop_h, crop_w = height, round(height * max(self.ratio))
        else:
            crop_h, crop_w = height, width
        return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        top, left, crop_h, crop_w = self.params(clip.shape[-2], clip.shape[-1], rng)
        return _resize(_crop(clip, top, left, crop_h, crop_w), *self.size), label


def symmetric_label_map(label_map: Mapping[int, int] | None) -> dict[int, int]:
    """Complete one-way pairs (``{86: 87}`` -> ``{86: 87, 87: 86}``); conflicting pairs are an error."""
    out: dict[int, int] = {}
    for src, dst in (label_map or {}).items():
        for a, b in ((int(src), int(dst)), (int(dst), int(src))):
            if out.get(a, b) != b:
                raise ValueError(f"flip_label_map maps {a} to both {out[a]} and {b}")
            out[a] = b
    return out


class RandomHorizontalFlip:
    """Flip the whole clip with probability ``p``; a flipped clip's label goes through ``label_map``
    (Something-Something V2's left/right pairs, e.g. 86 <-> 87)."""

    def __init__(self, p: float = 0.5, label_map: Mapping[int, int] | None = None) -> None:
        self.p = p
        self.label_map = symmetric_label_map(label_map)

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        if rng.random() < self.p:
            clip = clip.flip(-1)
            if label is not None:
                label = self.label_map.get(int(label), label)
        return clip, label


class ResizeShortSide:
    """Resize so the short side is ``size``, keeping the aspect ratio (TSN's ``GroupScale``)."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        height, width = clip.shape[-2:]
        if height <= width:
            new_h, new_w = self.size, max(1, round(width * self.size / height))
        else:
            new_h, new_w = max(1, round(height * self.size / width)), self.size
        return _resize(clip, new_h, new_w), label


class Resize:
    """Resize every frame to a fixed ``(height, width)`` (video ReID: 256 x 128), ignoring the aspect."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        return _resize(clip, *self.size), label


def _check_fits(clip: Tensor, crop_h: int, crop_w: int, name: str) -> None:
    if clip.shape[-2] < crop_h or clip.shape[-1] < crop_w:
        raise ValueError(f"{name}: crop {crop_h}x{crop_w} is larger than the frame "
                         f"{clip.shape[-2]}x{clip.shape[-1]} (resize first: data.scale_size)")


class CenterCrop:
    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        crop_h, crop_w = self.size
        _check_fits(clip, crop_h, crop_w, "CenterCrop")
        top = (clip.shape[-2] - crop_h) // 2
        left = (clip.shape[-1] - crop_w) // 2
        return _crop(clip, top, left, crop_h, crop_w), label


class ThreeCrop:
    """Three crops along the long side (start, middle, end), centred on the short side -> ``(3, ...)``.

    With the crop as large as the short side (TANet / mmaction2 Kinetics test: 256 crops after resizing the
    short side to 256) the three crops cover the whole frame.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        crop_h, crop_w = self.size
        _check_fits(clip, crop_h, crop_w, "ThreeCrop")
        height, width = clip.shape[-2:]
        if width - crop_w >= height - crop_h:
            top = (height - crop_h) // 2
            boxes = [(top, left) for left in (0, (width - crop_w) // 2, width - crop_w)]
        else:
            left = (width - crop_w) // 2
            boxes = [(top, left) for top in (0, (height - crop_h) // 2, height - crop_h)]
        return torch.stack([_crop(clip, t, c, crop_h, crop_w) for t, c in boxes]), label


class TenCrop:
    """Four corners + centre, then the same five flipped -> ``(10, ...)`` (torchvision order)."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _pair(size)

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        crop_h, crop_w = self.size
        _check_fits(clip, crop_h, crop_w, "TenCrop")
        height, width = clip.shape[-2:]
        boxes = [(0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w),
                 ((height - crop_h) // 2, (width - crop_w) // 2)]
        five = torch.stack([_crop(clip, t, c, crop_h, crop_w) for t, c in boxes])
        return torch.cat([five, five.flip(-1)]), label


class Normalize:
    """uint8 -> float32 ``(x / 255 - mean) / std`` in one pass, output in contiguous memory."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got mean={mean}, std={std}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        # (x / 255 - mean) / std == x * scale + shift: one multiply-add pass after the dtype conversion
        self.scale = 1.0 / (255.0 * self.std)
        self.shift = -self.mean / self.std

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        out = clip.to(torch.float32, memory_format=torch.contiguous_format)
        return out.mul_(self.scale).add_(self.shift), label


class SubtractClipMean:
    """Subtracts each clip's per-channel mean over its frames and pixels; runs after :class:`Normalize`.

    ``(T, 3, H, W)`` (or ``(num_crops, T, 3, H, W)``, each crop on its own) -> the same shape with every
    channel at mean 0 over (T, H, W). It removes a clip-wide colour offset (a uniformly coloured background,
    lighting), which carries no temporal information. Trained from scratch on videos whose background colour
    is random per video, a narrow network otherwise sees mostly that colour: at initialisation 78% of the
    variance of the stem's output is between clips (per-clip channel means), which BatchNorm, computed over
    the batch, leaves in place. ``data.subtract_clip_mean``; off by default (ImageNet-pretrained recipes).
    """

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        return clip - clip.mean(dim=(-4, -2, -1), keepdim=True), label


class RandomErasing:
    """Random erasing (Zhong et al., AAAI'20) with one box for the whole clip (every frame, every view).

    With probability ``p``: a box of area fraction in ``scale`` and aspect in ``ratio`` (log-uniform) is set
    to ``value`` (0 on normalised frames = the mean colour). Runs after :class:`Normalize`. torchreid draws a
    box per frame; the box here is shared so that the clip stays temporally consistent.
    """

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.02, 0.4),
                 ratio: Sequence[float] = (0.3, 1 / 0.3), value: float = 0.0) -> None:
        self.p = p
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.value = value

    def __call__(self, clip: Tensor, label: Any, rng: np.random.Generator) -> tuple[Tensor, Any]:
        if rng.random() >= self.p:
            return clip, label
        height, width = clip.shape[-2:]
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = height * width * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            box_h = round(math.sqrt(area * aspect))
            box_w = round(math.sqrt(area / aspect))
            if 0 < box_h < height and 0 < box_w < width:
                top = int(rng.integers(0, height - box_h + 1))
                left = int(rng.integers(0, width - box_w + 1))
                clip = clip.clone()
                clip[..., top:top + box_h, left:left + box_w] = self.value
                break
        return clip, label


class ClipTransform:
    """A chain of clip ops, called as ``transform(frames, label, rng) -> (Tensor, label)``.

    ``frames``: uint8 ``(T, H, W, 3)``; ``label`` may be None. Output: float ``(T, 3, h, w)``, or
    ``(num_crops, T, 3, h, w)`` when ``num_crops > 1``. ``rng`` drives every random choice (one draw per
    clip, shared by its frames); deterministic test transforms ignore it.
    """

    def __init__(self, ops: Sequence[Any], num_crops: int = 1,
                 output_size: tuple[int, int] | None = None) -> None:
        self.ops = list(ops)
        self.num_crops = num_crops
        self.output_size = output_size  # (h, w) of the output, None when it depends on the input

    def __call__(self, frames: np.ndarray | Tensor, label: int | None,
                 rng: np.random.Generator) -> tuple[Tensor, int | None]:
        clip = frames_to_tensor(frames)
        for op in self.ops:
            clip, label = op(clip, label, rng)
        return clip, label

    def __repr__(self) -> str:
        inner = ",\n    ".join(type(op).__name__ + "(" + ", ".join(f"{k}={v!r}" for k, v in vars(op).items()
                                                              if not isinstance(v, Tensor)) + ")"
                               for op in self.ops)
        return f"ClipTransform(\n    {inner}\n)"


def build_clip_transform(data_cfg: Any, split_cfg: Any, train: bool,
                         flip_label_map: Mapping[int, int] | None = None) -> ClipTransform:
    """The transform for one split from the config.

    Reads ``data.input_size`` (H, W), ``scale_size``, ``flip``, ``flip_label_map`` (unless the label pairs of
    the flip are given as ``flip_label_map``, as the action dataset builder does after reading
    ``data.flip_pairs_file``), ``mean``, ``std``, ``subtract_clip_mean``, ``random_erasing`` and
    ``data.<split>.crop``:
        random_multiscale (train): TSN multi-scale crop to input_size; random_resized (train): random
        resized crop to input_size; center: resize short side to scale_size, centre crop input_size;
        three (test): resize short side to scale_size, three scale_size x scale_size crops; ten (test):
        resize short side to scale_size, ten input_size crops; resize: whole frame to input_size (ReID).
    In training a horizontal flip (``data.flip``, with the label map) and random erasing
    (``data.random_erasing`` > 0) follow the crop; normalisation (then the clip-mean subtraction, in every
    split when ``data.subtract_clip_mean``) is always last but for erasing.
    """
    size = _pair(list(data_cfg.input_size))
    crop = split_cfg.crop
    label_map = data_cfg.flip_label_map if flip_label_map is None else flip_label_map
    ops: list[Any] = []
    num_crops = 1
    output_size: tuple[int, int] | None = size
    if crop in ("random_multiscale", "random_resized") and not train:
        raise ValueError(f"crop {crop!r} is a training crop; use center, three, ten or resize for evaluation")
    if crop in ("three", "ten") and train:
        raise ValueError(f"crop {crop!r} is a test-time multi-crop; use random_multiscale, random_resized, "
                         "center or resize for training")
    if crop == "random_multiscale":
        ops.append(MultiScaleCrop(size))
    elif crop == "random_resized":
        ops.append(RandomResizedCrop(size))
    elif crop == "center":
        ops += [ResizeShortSide(data_cfg.scale_size), CenterCrop(size)]
    elif crop == "three":
        ops += [ResizeShortSide(data_cfg.scale_size), ThreeCrop(data_cfg.scale_size)]
        num_crops, output_size = 3, _pair(data_cfg.scale_size)
    elif crop == "ten":
        if label_map:
            raise ValueError("crop 'ten' flips frames, which swaps the classes in data.flip_label_map "
                             "(or data.flip_pairs_file); use crop 'three' or 'center'")
        ops += [ResizeShortSide(data_cfg.scale_size), TenCrop(size)]
        num_crops = 10
    elif crop == "resize":
        ops.append(Resize(size))
    else:
        raise ValueError(f"unknown crop {crop!r}; valid: random_multiscale, random_resized, center, three, "
                         "ten, resize")
    if train and data_cfg.flip:
        ops.append(RandomHorizontalFlip(0.5, label_map))
    ops.append(Normalize(data_cfg.mean, data_cfg.std))
    if data_cfg.subtract_clip_mean:
        ops.append(SubtractClipMean())
    if train and data_cfg.random_erasing > 0:
        ops.append(RandomErasing(p=data_cfg.random_erasing))
    return ClipTransform(ops, num_crops=num_crops, output_size=output_size)
