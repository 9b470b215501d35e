"""Entry points: train, evaluate and extract features from a resolved config (used by ``tools/``).

Each works single-process or under ``torchrun`` (the process group comes from the environment) and raises
clear exceptions (``ValueError`` incl. ``ConfigError``, ``CheckpointError``) for bad input before any long
work starts; the tools turn them into one-line messages.
"""

from .evaluation import evaluate, extract_features, write_feature_file
from .runtime import amp_dtype_for, build_model_on, load_model_for_eval
from .training import train

__all__ = [
    "amp_dtype_for",
    "build_model_on",
    "evaluate",
    "extract_features",
    "load_model_for_eval",
    "train",
    "write_feature_file",
]
