"""The small interface every task module implements.

A built-in task is one module in this package that defines ``TASK``, an instance of a :class:`Task`
subclass, listed in ``tasks/__init__.py``; its metrics, label and scorer are attributes and methods of
that instance, which every other part of the suite reads. A task of your own needs only its
definition in the config (:mod:`tunebench.tasks.custom`).

Prepared rows (``results/data/{task}/{split}.jsonl``) are dicts with at least:

``id``          stable identifier, the same on every run (e.g. ``viggo-test-00042``)
``prompt``      the task input as plain text (no format markers)
``completion``  the target text the model learns to write (no format markers)
``answer``      what the scorer compares a prediction with
plus the task's own fields (``context`` for SQL, ``a``/``b`` for multiplication, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..util.errors import DataError, DataUnavailable  # noqa: F401  (re-exported for task modules)
from .data import BadRow, Filter, Prepared  # noqa: F401  (re-exported for task modules)


class Task:
    """Base class of the task modules. Subclasses set the class attributes and override methods."""

    name: str = ""
    #: How tables, figures and the paper name the task.
    label: str = ""
    #: The natural-language instruction used by the ``instruction`` and ``chat`` prompt formats.
    instruction: str = ""
    #: Metric names, in display order; ``primary_metric`` is the one figures and headlines use.
    metrics: tuple[str, ...] = ()
    primary_metric: str = ""
    #: Generation limit when the config gives none.
    max_new_tokens: int = 256
    #: Baseline prompt variants this task offers (``default`` first).
    baseline_variants: tuple[str, ...] = ("default",)
    #: Splits that must not come out empty; the data stage refuses the task otherwise.
    required_splits: tuple[str, ...] = ("train", "validation", "test")

    def prepare(self, options: Mapping[str, Any], mirror: Path | None, seed: int) -> Prepared:
        """Load (hub or ``mirror``), validate and format every split."""
        raise NotImplementedError

    def score(self, prediction: str, gold: Mapping[str, Any], **options: Any) -> dict[str, bool | None]:
        """Verdict per metric for one raw model output; ``None`` marks a row that cannot be scored.

        Task modules delegate to ``tunebench.tasks.scoring.<task>.score``; ``options`` come from the
        ``evaluation`` config section (e.g. ``sql_databases``, ``sql_timeout_s``).
        """
        raise NotImplementedError

    def extract(self, prediction: str) -> Any:
        """The part of a raw output the scorer compares (recorded in predictions.jsonl), or ``None``."""
        from . import scoring

        return scoring.get(self.name).extract(prediction)

    def baseline_messages(
        self, row: Mapping[str, Any], train: list[Mapping[str, Any]], variant: str, options: Mapping[str, Any]
    ) -> list[dict[str, str]]:
        """Chat messages (``role``/``content``) of the prompted baseline for ``row``.

        ``train`` is the task's training split, from which few-shot examples are picked
        deterministically; ``options`` is the ``evaluation`` config section.
        """
        raise NotImplementedError
