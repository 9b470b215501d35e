"""Entry points: train, evaluate and extract features from a resolved config (used by ``tools/``), and use a
trained model (``load_model``, ``predict_video``, ``predict_long_video``, ``embed_tracklet``, ``embed_many``).

Each works single-process or under ``torchrun`` (the process group comes from the environment) and raises
clear exceptions (``ValueError`` incl. ``ConfigError``, ``CheckpointError``) for bad input before any long
work starts; the tools turn them into one-line messages.
"""

from .evaluation import evaluate, extract_features, write_feature_file
from .inference import (
    WindowPrediction,
    embed_many,
    embed_tracklet,
    load_model,
    load_video_clip,
    predict_long_video,
    predict_video,
)
from .runtime import amp_dtype_for, build_model_on, load_model_for_eval
from .training import train

__all__ = [
    "WindowPrediction",
    "amp_dtype_for",
    "build_model_on",
    "embed_many",
    "embed_tracklet",
    "evaluate",
    "extract_features",
    "load_model",
    "load_model_for_eval",
    "load_video_clip",
    "predict_long_video",
    "predict_video",
    "train",
    "write_feature_file",
]
