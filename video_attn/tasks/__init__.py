"""The tasks: action recognition and video person ReID, each one object chosen once per run.

A task builds its datasets and loaders, checks the training data against the model, builds its loss,
evaluates a model and extracts features; :func:`build_task` picks it from the config.
"""

from .action import ActionTask
from .base import LossFn, Task
from .build import TASKS, build_task
from .reid import ReidTask, reid_metrics

__all__ = ["TASKS", "ActionTask", "LossFn", "ReidTask", "Task", "build_task", "reid_metrics"]
