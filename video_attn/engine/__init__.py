"""Training and evaluation engine: the loop with hooks, checkpoints, schedules, DDP helpers, inference.

Entry points used by the tools: :func:`~video_attn.engine.runner.train`, :func:`~video_attn.engine.runner.
evaluate`, :func:`~video_attn.engine.runner.extract_features`.
"""

from .checkpoint import CheckpointError, atomic_save, atomic_write, load_checkpoint
from .hooks import EvalHook, HookBase, PeriodicCheckpointer, TemperatureHook
from .lr_scheduler import WarmupLRScheduler, build_scheduler
from .optim import build_optimizer, build_param_groups
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted

__all__ = [
    "CheckpointError",
    "EvalHook",
    "HookBase",
    "NonFiniteLossError",
    "PeriodicCheckpointer",
    "TemperatureHook",
    "Trainer",
    "TrainingInterrupted",
    "WarmupLRScheduler",
    "atomic_save",
    "atomic_write",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "load_checkpoint",
]
