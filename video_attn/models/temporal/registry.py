"""The temporal module each ``model.arch`` names, and its construction from ``model.temporal_kwargs``.

Action archs put their module inside the residual blocks (``tsn`` has none); ReID archs aggregate the
per-frame features of a tracklet. ``model.temporal_kwargs`` holds constructor options of the module; the
arguments the model builder supplies itself (``in_channels``, ``num_segments``) are not options.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from .gltr import GLTR
from .tam import TAM
from .temporal_pooling import RecurrentPool, TemporalAttentionPool, TemporalAvgPool
from .temporal_shift import TemporalShift

__all__ = [
    "ACTION_TEMPORAL_MODULES",
    "REID_TEMPORAL_MODULES",
    "build_temporal_module",
    "check_temporal_kwargs",
    "temporal_options",
]

# model.arch -> module placed in the blocks of the backbone (None: plain TSN)
ACTION_TEMPORAL_MODULES: dict[str, type[nn.Module] | None] = {"tsn": None, "tsm": TemporalShift, "tanet": TAM}
# model.arch -> module aggregating (N, T, C) frame features into (N, D)
REID_TEMPORAL_MODULES: dict[str, type[nn.Module]] = {
    "gltr": GLTR,
    "temporal_pool": TemporalAvgPool,
    "temporal_attention": TemporalAttentionPool,
    "gru": RecurrentPool,
}


def temporal_options(module_cls: type[nn.Module], supplied: tuple[str, ...]) -> list[str]:
    """Constructor arguments of ``module_cls`` settable in ``model.temporal_kwargs``: all but ``supplied``."""
    params = inspect.signature(module_cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.name not in supplied]


def check_temporal_kwargs(
    arch: str, module_cls: type[nn.Module] | None, kwargs: Mapping[str, Any], supplied: tuple[str, ...]
) -> None:
    """Raise a one-line ``ValueError`` naming the arch and the valid keys if ``kwargs`` has an unknown key."""
    if module_cls is None:
        if kwargs:
            raise ValueError(
                f"model.arch={arch} has no temporal module; model.temporal_kwargs must be empty, "
                f"got {dict(kwargs)}"
            )
        return
    valid = temporal_options(module_cls, supplied)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"model.temporal_kwargs: unknown key(s) {', '.join(unknown)} for model.arch={arch} "
            f"({module_cls.__name__}); valid keys: {', '.join(valid) or '(none)'}"
        )


def build_temporal_module(
    arch: str, module_cls: type[nn.Module], kwargs: Mapping[str, Any], **supplied: Any
) -> nn.Module:
    """``module_cls(**supplied, **kwargs)``, with one-line errors naming the arch for a bad ``kwargs``.

    Args:
        arch: the ``model.arch`` naming the module (for the messages).
        module_cls: the registered class.
        kwargs: ``model.temporal_kwargs``; absent options keep the constructor's defaults.
        supplied: arguments set by the model builder (e.g. ``in_channels``, ``num_segments``).
    """
    check_temporal_kwargs(arch, module_cls, kwargs, tuple(supplied))
    try:
        return module_cls(**supplied, **kwargs)
    except (TypeError, ValueError) as exc:  # a value of the wrong type or range
        name = module_cls.__name__
        raise ValueError(f"model.temporal_kwargs for model.arch={arch} ({name}): {exc}") from None
