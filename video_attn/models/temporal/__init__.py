"""Temporal modules: TAM (TANet) and the TSM shift inside ResNet blocks; GLTR and the pooling baselines that
aggregate per-frame ReID features into a tracklet embedding."""

from .gltr import GLTR, TemporalNonLocal
from .tam import TAM, temporal_adaptive_aggregate
from .temporal_pooling import RecurrentPool, TemporalAttentionPool, TemporalAvgPool
from .temporal_shift import TemporalShift, temporal_shift

__all__ = [
    "GLTR",
    "TAM",
    "RecurrentPool",
    "TemporalAttentionPool",
    "TemporalAvgPool",
    "TemporalNonLocal",
    "TemporalShift",
    "temporal_adaptive_aggregate",
    "temporal_shift",
]
