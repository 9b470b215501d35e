"""Temporal modules: TAM (TANet) and the TSM shift inside ResNet blocks; GLTR and the pooling baselines that
aggregate per-frame ReID features into a tracklet embedding; the registry mapping ``model.arch`` to them."""

from .gltr import GLTR, TemporalNonLocal
from .registry import ACTION_TEMPORAL_MODULES, REID_TEMPORAL_MODULES, build_temporal_module
from .tam import TAM, temporal_adaptive_aggregate
from .temporal_pooling import RecurrentPool, TemporalAttentionPool, TemporalAvgPool
from .temporal_shift import TemporalShift, temporal_shift

__all__ = [
    "ACTION_TEMPORAL_MODULES",
    "GLTR",
    "REID_TEMPORAL_MODULES",
    "TAM",
    "RecurrentPool",
    "TemporalAttentionPool",
    "TemporalAvgPool",
    "TemporalNonLocal",
    "TemporalShift",
    "build_temporal_module",
    "temporal_adaptive_aggregate",
    "temporal_shift",
]
