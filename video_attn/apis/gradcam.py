"""Grad-CAM per frame of an action model, with the ``grad-cam`` package (``pytorch_grad_cam``).

The model takes clips ``(N, T, 3, H, W)`` and its backbone sees ``N * T`` frames; ``pytorch_grad_cam``
treats a 5-D input as one 3-D volume per sample and resizes a CAM to its input's size.
:class:`FrameClassifier` gives it what it expects from an image classifier: it takes the ``N * T`` frames
``(N * T, 3, H, W)``, regroups them into clips for the model, and returns each frame its clip's logits
``(N * T, K)``. A layer of the backbone then has one activation map per frame, so Grad-CAM gives one map
per frame: the channel weights are the gradient of the clip's class score averaged over each frame's own
positions (through TAM / TSM the score depends on every frame, and each frame's map shows where that
frame's features raise it).

Install the extra: ``pip install -e ".[visualize]"``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["GRADCAM_MISSING", "FrameClassifier", "frame_gradcam"]

GRADCAM_MISSING = 'Grad-CAM needs the grad-cam package: pip install -e ".[visualize]"'


class FrameClassifier(nn.Module):
    """``(N * T, 3, H, W)`` frames -> ``(N * T, K)``: frame ``i`` gets the logits of its clip ``i // T``.

    Args:
        model: an action model mapping clips ``(N, T, 3, H, W)`` to logits ``(N, K)``.
        num_segments: T.
    """

    def __init__(self, model: nn.Module, num_segments: int) -> None:
        super().__init__()
        self.model = model
        self.num_segments = num_segments

    def forward(self, frames: Tensor) -> Tensor:
        t = self.num_segments
        if frames.dim() != 4 or frames.shape[0] % t:
            raise ValueError(f"expected (N*T, 3, H, W) frames with T={t}, got {tuple(frames.shape)}")
        logits = self.model(frames.view(-1, t, *frames.shape[1:]))
        return logits.repeat_interleave(t, dim=0)


def frame_gradcam(
    model: nn.Module, clips: Tensor, layer: str | nn.Module, target: int | list[int] | None = None
) -> tuple[np.ndarray, list[int]]:
    """Grad-CAM of every frame of ``clips`` for one class per clip.

    Args:
        model: an action model (clips ``(N, T, 3, H, W)`` -> logits ``(N, K)``); put in eval mode.
        clips: float ``(N, T, 3, H, W)`` (or one clip ``(T, 3, H, W)``), normalised as the model's input.
        layer: the module (or its path in ``model``, e.g. ``"backbone.layer4"``) whose per-frame output
            ``(N * T, C, h, w)`` the CAM is computed on.
        target: the class of each clip (one int for all); None: each clip's predicted class.

    Returns:
        ``(cams, classes)``: float32 ``(N, T, H, W)`` maps upsampled to the frame size, each frame's map
        scaled to [0, 1] (pytorch_grad_cam's convention: ReLU, then min-max per frame), and the class of
        each clip. Raises ``ImportError`` with :data:`GRADCAM_MISSING` without the package.
    """
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as exc:
        raise ImportError(GRADCAM_MISSING) from exc
    if clips.dim() == 4:
        clips = clips[None]
    n, t = clips.shape[:2]
    module = model.get_submodule(layer) if isinstance(layer, str) else layer
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        predicted = model(clips.to(device)).argmax(dim=1).tolist()
    if target is None:
        classes = predicted
    else:
        classes = [target] * n if isinstance(target, int) else list(target)
    if len(classes) != n:
        raise ValueError(f"{len(classes)} targets for {n} clips")
    wrapper = FrameClassifier(model, t)
    frames = clips.reshape(n * t, *clips.shape[2:]).to(device)
    # the input takes part in the graph: the CAM needs gradients even where every parameter is frozen
    frames.requires_grad_(True)
    targets = [ClassifierOutputTarget(c) for c in classes for _ in range(t)]
    with torch.enable_grad(), GradCAM(model=wrapper, target_layers=[module]) as cam:
        maps = cam(input_tensor=frames, targets=targets)
    model.zero_grad(set_to_none=True)  # leave no gradients behind in a model that may be trained later
    return np.asarray(maps, dtype=np.float32).reshape(n, t, *maps.shape[-2:]), classes
