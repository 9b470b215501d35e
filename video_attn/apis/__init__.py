"""Entry points: train, evaluate and extract features from a resolved config (used by ``tools/``), and use a
trained model (``load_model``, ``predict_video``, ``predict_long_video``, ``embed_tracklet``, ``embed_many``),
export it (``export_checkpoint``, ``export_model``), and measure what a model costs (``analyze_model``).

Each works single-process or under ``torchrun`` (the process group comes from the environment) and raises
clear exceptions (``ValueError`` incl. ``ConfigError``, ``CheckpointError``) for bad input before any long
work starts; the tools turn them into one-line messages.
"""

from .evaluation import evaluate, extract_features, write_feature_file
from .export import ExportError, ExportResult, export_checkpoint, export_model, exportable_copy, onnx_session
from .inference import (
    WindowPrediction,
    embed_many,
    embed_tracklet,
    load_model,
    load_video_clip,
    predict_long_video,
    predict_video,
)
from .model_cost import CostRow, Latency, ModelCost, analyze_model, count_macs, count_parameters
from .runtime import amp_dtype_for, build_model_on, load_model_for_eval
from .training import train

__all__ = [
    "CostRow",
    "ExportError",
    "ExportResult",
    "Latency",
    "ModelCost",
    "WindowPrediction",
    "amp_dtype_for",
    "analyze_model",
    "build_model_on",
    "count_macs",
    "count_parameters",
    "embed_many",
    "embed_tracklet",
    "evaluate",
    "export_checkpoint",
    "export_model",
    "exportable_copy",
    "extract_features",
    "load_model",
    "load_model_for_eval",
    "load_video_clip",
    "onnx_session",
    "predict_long_video",
    "predict_video",
    "train",
    "write_feature_file",
]
