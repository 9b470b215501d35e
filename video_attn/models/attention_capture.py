"""Record what every attention module of a model computed during a forward pass.

Every attention and temporal module calls an :class:`~video_attn.models.attention.probe.AttentionProbe` (an
``nn.Identity``) on the map or weights it applies. :class:`AttentionRecorder` finds the probes by type,
hooks them, and hands back their outputs per module path, the clip axis restored::

    with AttentionRecorder(model) as rec:
        logits = model(clip)                        # clip (N, T, 3, H, W)
    for path, record in rec.records.items():
        print(path, record.kind, tuple(record.value.shape))
    # backbone.layer1.0.temporal.kernel      temporal_kernel      (N, C, K)
    # backbone.layer1.0.temporal.importance  temporal_importance  (N, C, T)
    # backbone.layer1.0.attn.channel         channel              (N, T, C, 1, 1)
    # backbone.layer1.0.attn.spatial         spatial              (N, T, 1, H, W)

What each module records (the value it multiplies with; ``B = N * T`` frames before the reshape):

================================  =====================  ============================================
module                            kind                   recorded value
================================  =====================  ============================================
SE, ECA, CBAM channel half        ``channel``            (N, T, C, 1, 1)
Shuffle Attention channel half    ``channel``            (N, T, C/2, 1, 1), group-major
CBAM spatial half                 ``spatial``            (N, T, 1, H, W)
Shuffle Attention spatial half    ``spatial``            (N, T, C/2, H, W), group-major
GSA (global self-attention)       ``spatial``            (N, T, heads * dim_key, H, W), softmax(keys)
Residual Attention stage module   ``spatial``            (N, T, C, H, W), the soft mask M(x)
SK (selective kernel)             ``branch``             (N, T, M, C, 1, 1), softmax over M
split attention (ResNeSt)         ``branch``             (N, T, radix, C, 1, 1)
CondConv                          ``branch``             (N, T, num_experts), sigmoid routing
Dynamic Conv                      ``branch``             (N, T, num_kernels), softmax attention
Highway residual                  ``branch``             (N, T, C, H, W), transform gate T(x)
TAM global branch                 ``temporal_kernel``    (N, C, K), softmax over K
TAM local branch                  ``temporal_importance``  (N, C, T)
GLTR temporal self-attention      ``temporal_attention``   (N, T, T), rows sum to 1
temporal attention pooling        ``temporal_attention``   (N, T)
================================  =====================  ============================================

Paths: a probe's module path, with a last component ``probe`` dropped and a suffix ``_probe`` removed
(``backbone.layer2.0.attn.spatial.probe`` -> ``backbone.layer2.0.attn.spatial``,
``...temporal.kernel_probe`` -> ``...temporal.kernel``). Records are ordered as the modules are in the model.
A probe called more than once while recording (a ReID model embeds long tracklets in chunks of frames,
several forward passes) contributes its calls concatenated along the batch axis.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .attention.probe import PROBE_KINDS, AttentionProbe

__all__ = ["AttentionRecord", "AttentionRecorder", "probe_key"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttentionRecord:
    """What one probe carried.

    Attributes:
        kind: one of :data:`~video_attn.models.attention.probe.PROBE_KINDS`.
        value: detached CPU tensor, ``(N, T, ...)`` when ``per_frame`` else ``(N, ...)`` (module docstring).
        per_frame: the value has a frame axis (dim 1) restored from the backbone's ``N * T`` batch.
        module: class name of the module that holds the probe (e.g. ``"SpatialAttention"``, ``"TAM"``).
    """

    kind: str
    value: Tensor
    per_frame: bool
    module: str


def probe_key(path: str) -> str:
    """The record key of the probe at module path ``path`` (rule in the module docstring)."""
    head, _, last = path.rpartition(".")
    if last == "probe":
        return head
    if last.endswith("_probe"):
        last = last[: -len("_probe")]
    return f"{head}.{last}" if head else last


class AttentionRecorder:
    """Context manager recording every :class:`AttentionProbe` of ``model`` (see the module docstring).

    Args:
        model: any module holding probes (a Recognizer, a ReIDModel, a backbone).
        num_segments: frames T per clip, to split the ``N * T`` batch of the per-frame values. Default:
            ``model.num_segments`` when the model has it, else T of the last 5-D ``(N, T, 3, H, W)`` input of
            ``model``'s forward while recording.
        kinds: record only these kinds (default: all).
        include: record only paths starting with one of these module paths (e.g. ``["backbone.layer4"]``).

    ``records`` (after or during recording) maps path -> :class:`AttentionRecord`. Recording adds no
    computation to the model; ``clear()`` forgets what was recorded. Values are copied to the CPU as they
    come, so record single clips / small batches of big models.
    """

    def __init__(
        self,
        model: nn.Module,
        num_segments: int | None = None,
        kinds: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        self.model = model
        self.num_segments = num_segments if num_segments is not None else getattr(model, "num_segments", None)
        self.kinds = tuple(kinds) if kinds is not None else PROBE_KINDS
        unknown = [k for k in self.kinds if k not in PROBE_KINDS]
        if unknown:
            raise ValueError(f"unknown attention kinds {unknown}; valid: {', '.join(PROBE_KINDS)}")
        self.include = tuple(include) if include is not None else None
        self._probes = self._find_probes()
        self._calls: dict[str, list[Tensor]] = {key: [] for key in self._probes}
        self._handles: list[RemovableHandle] = []
        self._input_segments: int | None = None

    # ------------------------------------------------------------------------------------- selection
    def _find_probes(self) -> dict[str, tuple[AttentionProbe, str]]:
        """``{key: (probe, holder class name)}`` in module order."""
        modules = dict(self.model.named_modules())
        found: dict[str, tuple[AttentionProbe, str]] = {}
        for path, module in modules.items():
            if not isinstance(module, AttentionProbe) or module.kind not in self.kinds:
                continue
            if self.include is not None and not any(
                path == p or path.startswith(f"{p}.") for p in self.include
            ):
                continue
            holder = modules.get(path.rpartition(".")[0], self.model)
            found[probe_key(path)] = (module, type(holder).__name__)
        return found

    @property
    def paths(self) -> list[str]:
        """Keys of the probes this recorder hooks, in module order (whether or not they ran)."""
        return list(self._probes)

    # --------------------------------------------------------------------------------------- hooking
    def __enter__(self) -> AttentionRecorder:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Register the hooks (what ``with`` does on entry)."""
        if self._handles:
            return
        for key, (probe, _) in self._probes.items():
            self._handles.append(probe.register_forward_hook(self._hook(key)))
        self._handles.append(self.model.register_forward_pre_hook(self._read_segments))

    def stop(self) -> None:
        """Remove the hooks; the records stay."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Forget the recorded values."""
        for calls in self._calls.values():
            calls.clear()
        self._input_segments = None

    def _hook(self, key: str):
        calls = self._calls[key]

        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            # a copy: the caller's tensor may be reused in place after the hook
            calls.append(output.detach().to("cpu", copy=True))

        return hook

    def _read_segments(self, module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor) and args[0].dim() == 5:
            self._input_segments = int(args[0].shape[1])

    # --------------------------------------------------------------------------------------- results
    def _segments(self) -> int:
        t = self.num_segments if self.num_segments is not None else self._input_segments
        if t is None:
            raise ValueError(
                "AttentionRecorder: unknown number of frames per clip; pass num_segments (the model has no "
                "num_segments attribute and saw no (N, T, 3, H, W) input)"
            )
        return t

    @property
    def records(self) -> dict[str, AttentionRecord]:
        """``{path: AttentionRecord}`` of the probes that ran, in module order."""
        out: dict[str, AttentionRecord] = {}
        for key, (probe, holder) in self._probes.items():
            calls = self._calls[key]
            if not calls:
                continue
            value = calls[0] if len(calls) == 1 else torch.cat(calls, dim=0)
            if probe.per_frame:
                t = self._segments()
                if value.shape[0] % t:
                    raise ValueError(
                        f"{key}: {value.shape[0]} frames recorded, not a multiple of num_segments={t}"
                    )
                value = value.reshape(value.shape[0] // t, t, *value.shape[1:])
            out[key] = AttentionRecord(probe.kind, value, probe.per_frame, holder)
        return out
