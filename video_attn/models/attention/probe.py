"""Named probe points: where an attention module exposes what it computed, for recording and visualisation.

An :class:`AttentionProbe` is an ``nn.Identity`` a module calls on the map or weights it is about to apply,
e.g. ``return x * self.probe(mask)``. It returns its input unchanged (no parameters, no buffers, no effect on
``state_dict`` keys, traced away by ONNX / TorchScript export); a forward hook on it sees the value.
:class:`video_attn.models.attention_capture.AttentionRecorder` finds probes by type and records their
outputs, so the recorder knows nothing of the modules' internals.

Conventions (what a module promises when it calls its probe):

- ``kind`` says what the value is (:data:`PROBE_KINDS`):

  ===========================  ==================================================================  ==========
  kind                         value                                                               layout
  ===========================  ==================================================================  ==========
  ``spatial``                  a map over positions ``(B, C', h, w)`` (``C' = 1`` for one map)     frames
  ``channel``                  one weight per channel ``(B, C)``                                   frames
  ``branch``                   weights over branches / experts / paths ``(B, M, ...)``             frames
  ``temporal_kernel``          one temporal kernel per clip and channel ``(N, C, K)``              clips
  ``temporal_importance``      the importance of each frame ``(N, C, T)``                          clips
  ``temporal_attention``       attention between / over frames ``(N, T, T)`` or ``(N, T)``         clips
  ===========================  ==================================================================  ==========

- ``per_frame``: True when the leading dim is the module's batch of frames (``B = N * T`` in a per-frame 2D
  backbone): a recorder reshapes it to ``(N, T, ...)``. False when the leading dim is the clip batch ``N``.
- the value is the one applied (after its sigmoid / softmax), in the module's dtype; a module that applies it
  through a reshaped view passes the probe a view in the layout above.
"""

from __future__ import annotations

from torch import nn

__all__ = ["PROBE_KINDS", "AttentionProbe"]

PROBE_KINDS: tuple[str, ...] = (
    "spatial",
    "channel",
    "branch",
    "temporal_kernel",
    "temporal_importance",
    "temporal_attention",
)

_PER_CLIP_KINDS = ("temporal_kernel", "temporal_importance", "temporal_attention")


class AttentionProbe(nn.Identity):
    """Identity marking an attention value of kind ``kind`` (see the module docstring for shapes).

    Args:
        kind: one of :data:`PROBE_KINDS`.
        per_frame: leading dim is frames (``N * T``) rather than clips (``N``); default: False for the
            ``temporal_*`` kinds, True otherwise.
    """

    def __init__(self, kind: str, per_frame: bool | None = None) -> None:
        super().__init__()
        if kind not in PROBE_KINDS:
            raise ValueError(f"unknown probe kind {kind!r}; valid: {', '.join(PROBE_KINDS)}")
        self.kind = kind
        self.per_frame = kind not in _PER_CLIP_KINDS if per_frame is None else per_frame

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, per_frame={self.per_frame}"
