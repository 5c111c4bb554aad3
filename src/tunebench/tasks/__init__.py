"""Task registry: one module per built-in task, each defining ``TASK`` (see :mod:`tunebench.tasks.base`),
plus the tasks a config declares from its own data (:mod:`tunebench.tasks.custom`).

Everything that lists tasks (the data rules, the scored tasks, the labels of tables and figures, the
``tunebench score`` choices, the config's checks of task names) derives from this registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from .base import BadRow, DataUnavailable, Filter, Prepared, Task

NAMES = ("viggo", "sql", "gsm8k", "mathqa", "multiplication")

# Tasks declared by the config most recently validated in this process (tunebench.config.validate).
_DECLARED: dict[str, Task] = {}


def configure(config: Mapping[str, Any]) -> None:
    """Register the custom tasks of a validated config (replacing those of an earlier one)."""
    from .custom import CustomTask, is_custom

    _DECLARED.clear()
    for name, section in (config.get("tasks") or {}).items():
        if name not in NAMES and is_custom(section):
            _DECLARED[name] = CustomTask(name, section)


def names() -> tuple[str, ...]:
    """The built-in tasks, then the declared ones in config order."""
    return NAMES + tuple(_DECLARED)


def get(name: str) -> Task:
    if name in _DECLARED:
        return _DECLARED[name]
    if name not in NAMES:
        raise KeyError(f"unknown task {name!r}; known tasks are {', '.join(names())}")
    return import_module(f"{__name__}.{name}").TASK


def scored() -> tuple[str, ...]:
    """Tasks with metrics, in registry order (what evaluation, tables and figures cover)."""
    return tuple(name for name in names() if get(name).metrics)


def label(name: str) -> str:
    """How tables, figures and the paper name a task."""
    try:
        return get(name).label
    except KeyError:
        return name.replace("_", " ").title()


__all__ = [
    "NAMES",
    "configure",
    "get",
    "label",
    "names",
    "scored",
    "Task",
    "BadRow",
    "DataUnavailable",
    "Filter",
    "Prepared",
]
