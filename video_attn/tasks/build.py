"""Choosing the task of a config, once: ``task``, ``data.format`` and ``model.arch`` must agree."""

from __future__ import annotations

from video_attn.config.schema import Config, ConfigError

from .action import ActionTask
from .base import Task
from .reid import ReidTask

TASKS: dict[str, type[Task]] = {"action": ActionTask, "reid": ReidTask}


def _names(task: type[Task], kind: str) -> str:
    return f"{task.name}: {', '.join(getattr(task, kind))}"


def build_task(cfg: Config) -> Task:
    """The :class:`Task` of ``cfg``; raises ``ConfigError`` naming the key and its valid values.

    ``data.format`` decides the task (each format belongs to one task); ``task``, when set, must name that
    task, and ``model.arch`` must be an architecture of it.
    """
    by_format = [t for t in TASKS.values() if cfg.data.format in t.formats]
    if not by_format:
        valid = "; ".join(_names(t, "formats") for t in TASKS.values())
        raise ConfigError(f"data.format={cfg.data.format!r} is not a dataset format; valid: {valid}")
    (task,) = by_format
    if cfg.task is not None and cfg.task != task.name:
        if cfg.task not in TASKS:
            raise ConfigError(f"task={cfg.task!r} is not a task; valid: {', '.join(TASKS)} (or null)")
        raise ConfigError(
            f"task={cfg.task!r} but data.format={cfg.data.format!r} belongs to task {task.name}; "
            f"set task={task.name} or a {cfg.task} format ({', '.join(TASKS[cfg.task].formats)})"
        )
    if cfg.model.arch not in task.archs:
        raise ConfigError(
            f"model.arch={cfg.model.arch!r} is not a {task.name} architecture (data.format="
            f"{cfg.data.format!r}); valid: {', '.join(task.archs)}"
        )
    return task(cfg)
