"""Task registry: one module per task, each defining ``TASK`` (see :mod:`tunebench.tasks.base`)."""

from __future__ import annotations

from importlib import import_module

from .base import BadRow, DataUnavailable, Filter, Prepared, Task

NAMES = ("viggo", "sql", "gsm8k", "mathqa", "multiplication")


def get(name: str) -> Task:
    if name not in NAMES:
        raise KeyError(f"unknown task {name!r}; known tasks are {', '.join(NAMES)}")
    return import_module(f"{__name__}.{name}").TASK


__all__ = ["NAMES", "get", "Task", "BadRow", "DataUnavailable", "Filter", "Prepared"]
