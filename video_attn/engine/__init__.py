"""The training engine: the loop and its hooks, checkpoints, LR schedules, optimisers, DDP and logging.

:class:`Trainer` is the loop (:class:`TrainLoop`) with its default hooks; the task-level entry points that
build one from a config live above this package.
"""

from .checkpoint import (
    CheckpointError,
    TrainingCheckpointer,
    atomic_save,
    atomic_write,
    load_checkpoint,
    write_json_atomic,
)
from .device import move_to_device
from .hooks import (
    EvalHook,
    LRSchedulerHook,
    MetricWriter,
    PeriodicCheckpointer,
    StopOnSignal,
    TemperatureHook,
    TrainingInterrupted,
)
from .lr_scheduler import WarmupLRScheduler, build_scheduler
from .optim import build_optimizer, build_param_groups
from .train_loop import HookBase, NonFiniteLossError, StepRecord, TrainLoop
from .trainer import Trainer

__all__ = [
    "CheckpointError",
    "EvalHook",
    "HookBase",
    "LRSchedulerHook",
    "MetricWriter",
    "NonFiniteLossError",
    "PeriodicCheckpointer",
    "StepRecord",
    "StopOnSignal",
    "TemperatureHook",
    "TrainLoop",
    "Trainer",
    "TrainingCheckpointer",
    "TrainingInterrupted",
    "WarmupLRScheduler",
    "atomic_save",
    "atomic_write",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "load_checkpoint",
    "move_to_device",
    "write_json_atomic",
]
