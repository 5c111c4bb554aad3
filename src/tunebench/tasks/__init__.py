"""Task registry: the built-in tasks, each registered by its own module (see :mod:`tunebench.tasks.base`),
plus the tasks a config declares from its own data (:mod:`tunebench.tasks.custom`).

Everything that lists tasks (the config's schema and checks, the data rules, the scored tasks, the
labels and order of tables and figures, the ``tunebench score`` choices) derives from this registry;
no list of task names is written anywhere else.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Mapping
from importlib import import_module
from typing import Any

from .base import BadRow, DataUnavailable, Filter, Prepared, Task

_BUILT_IN: dict[str, Task] = {}

# Tasks declared by the config most recently validated in this process (tunebench.config.validate).
_DECLARED: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a built-in task to the registry (each task module calls it on the task it defines)."""
    if task.name in _BUILT_IN and type(_BUILT_IN[task.name]) is not type(task):
        raise ValueError(f"two tasks are named {task.name!r}; rename one")
    _BUILT_IN[task.name] = task
    return task


def built_in() -> tuple[str, ...]:
    """The built-in tasks in the suite's order."""
    return tuple(sorted(_BUILT_IN, key=lambda name: (_BUILT_IN[name].order, name)))


def configure(config: Mapping[str, Any]) -> None:
    """Register the custom tasks of a validated config (replacing those of an earlier one)."""
    from .custom import CustomTask, is_custom

    _DECLARED.clear()
    for name, section in (config.get("tasks") or {}).items():
        if name not in _BUILT_IN and is_custom(section):
            _DECLARED[name] = CustomTask(name, section)


def names() -> tuple[str, ...]:
    """The built-in tasks, then the declared ones in config order."""
    return built_in() + tuple(_DECLARED)


def get(name: str) -> Task:
    if name in _DECLARED:
        return _DECLARED[name]
    if name not in _BUILT_IN:
        raise KeyError(f"unknown task {name!r}; known tasks are {', '.join(names())}")
    return _BUILT_IN[name]


def scored() -> tuple[str, ...]:
    """Tasks with metrics, in registry order (what evaluation, tables and figures cover)."""
    return tuple(name for name in names() if get(name).metrics)


def label(name: str) -> str:
    """How tables, figures and the paper name a task."""
    try:
        return get(name).label
    except KeyError:
        return name.replace("_", " ").title()


# Every module of this package is imported once; the task modules among them register their task.
for _module in pkgutil.iter_modules(__path__):
    if not _module.ispkg:
        import_module(f"{__name__}.{_module.name}")

__all__ = [
    "built_in",
    "configure",
    "get",
    "label",
    "names",
    "register",
    "scored",
    "Task",
    "BadRow",
    "DataUnavailable",
    "Filter",
    "Prepared",
]
