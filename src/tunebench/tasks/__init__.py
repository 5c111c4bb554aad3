"""Task registry: the built-in tasks, each registered by its own module (see :mod:`tunebench.tasks.base`).

The module's functions (:func:`names`, :func:`get`, :func:`scored`, :func:`label`) cover the built-in
tasks only. The tasks of one config, the built-in ones and those it declares from its own data
(:mod:`tunebench.tasks.custom`), are a :class:`TaskSet` that validation builds and the experiment
(:class:`tunebench.config.Experiment`) carries; whatever may meet a declared task asks that set.

Everything that lists tasks (the config's schema and checks, the data rules, the scored tasks, the
labels and order of tables and figures, the ``tunebench score`` choices) derives from this registry;
no list of task names is written anywhere else.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import import_module
from types import MappingProxyType
from typing import Any

from .base import BadRow, DataUnavailable, Filter, Prepared, Task

_BUILT_IN: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a built-in task to the registry (each task module calls it on the task it defines)."""
    if task.name in _BUILT_IN and type(_BUILT_IN[task.name]) is not type(task):
        raise ValueError(f"two tasks are named {task.name!r}; rename one")
    _BUILT_IN[task.name] = task
    return task


def built_in() -> tuple[str, ...]:
    """The built-in tasks in the suite's order."""
    return tuple(sorted(_BUILT_IN, key=lambda name: (_BUILT_IN[name].order, name)))


@dataclass(frozen=True, eq=False)
class TaskSet:
    """The tasks of one config: the built-in ones, then those it declares, in the config's order."""

    declared: Mapping[str, Task] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> TaskSet:
        """The tasks of a validated config."""
        from .custom import CustomTask, is_custom

        declared = {
            name: CustomTask(name, section)
            for name, section in (config.get("tasks") or {}).items()
            if name not in _BUILT_IN and is_custom(section)
        }
        return cls(MappingProxyType(declared))

    def names(self) -> tuple[str, ...]:
        """The built-in tasks, then the declared ones in config order."""
        return built_in() + tuple(self.declared)

    def get(self, name: str) -> Task:
        if name in self.declared:
            return self.declared[name]
        if name not in _BUILT_IN:
            raise KeyError(f"unknown task {name!r}; known tasks are {', '.join(self.names())}")
        return _BUILT_IN[name]

    def scored(self) -> tuple[str, ...]:
        """Tasks with metrics, in registry order (what evaluation, tables and figures cover)."""
        return tuple(name for name in self.names() if self.get(name).metrics)

    def label(self, name: str) -> str:
        """How tables, figures and the paper name a task."""
        try:
            return self.get(name).label
        except KeyError:
            return name.replace("_", " ").title()


#: The built-in tasks alone, behind the module's functions.
BUILT_IN = TaskSet()
names = BUILT_IN.names
get = BUILT_IN.get
scored = BUILT_IN.scored
label = BUILT_IN.label


# Every module of this package is imported once; the task modules among them register their task.
for _module in pkgutil.iter_modules(__path__):
    if not _module.ispkg:
        import_module(f"{__name__}.{_module.name}")

__all__ = [
    "built_in",
    "BUILT_IN",
    "get",
    "label",
    "names",
    "register",
    "scored",
    "Task",
    "TaskSet",
    "BadRow",
    "DataUnavailable",
    "Filter",
    "Prepared",
]
