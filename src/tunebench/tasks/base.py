"""The small interface every task module implements.

A built-in task is one module in this package that registers an instance of a :class:`Task` subclass
where it defines it (``TASK = register(Viggo())``); the registry finds the module without a list. Its
label, config section (``schema``), scorer and metrics are attributes of that instance, which every
other part of the suite reads. A task of your own needs only its definition in the config
(:mod:`tunebench.tasks.custom`).

Prepared rows (``results/data/{task}/{split}.jsonl``) are dicts with at least:

``id``          stable identifier, the same on every run (e.g. ``viggo-test-00042``)
``prompt``      the task input as plain text (no format markers)
``completion``  the target text the model learns to write (no format markers)
``answer``      what the scorer compares a prediction with
plus the task's own fields (``context`` for SQL, ``a``/``b`` for multiplication, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

from ..util.errors import DataError, DataUnavailable  # noqa: F401  (re-exported for task modules)
from .data import BadRow, Filter, Prepared  # noqa: F401  (re-exported for task modules)


def section(description: str, **properties: dict[str, Any]) -> dict[str, Any]:
    """A task's config section as JSON schema: its keys, each with a default, and nothing else."""
    return {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "description": description,
        "properties": {"limit": {"$ref": "#/$defs/limit"}, **properties},
    }


def hub(dataset: str, **extra: str) -> dict[str, Any]:
    """The ``hub`` key of a task whose data comes from the hub dataset ``dataset``."""
    return {"$ref": "#/$defs/hub", "default": {"id": dataset, **extra}}


def fraction(default: float, description: str) -> dict[str, Any]:
    return {"$ref": "#/$defs/fraction", "default": default, "description": description}


class Task:
    """Base class of the task modules. Subclasses set the class attributes and override methods."""

    name: str = ""
    #: How tables, figures and the paper name the task.
    label: str = ""
    #: Place in the suite's order (the registry's, hence that of tables and figures).
    order: int = 0
    #: The JSON schema of the task's section under ``tasks`` (defaults included).
    schema: dict[str, Any] = section("A task.")
    #: The natural-language instruction used by the ``instruction`` and ``chat`` prompt formats.
    instruction: str = ""
    #: The scorer module (``METRICS``, ``extract``, ``score``), relative to :mod:`tunebench.tasks.scoring` when
    #: it starts with a dot; None for a task that is only trained on.
    scorer: str | None = None
    #: The metric figures and headlines use, one of the scorer's.
    primary_metric: str = ""
    #: Generation limit when the config gives none.
    max_new_tokens: int = 256
    #: Baseline prompt variants this task offers (``default`` first).
    baseline_variants: tuple[str, ...] = ("default",)
    #: Splits that must not come out empty; the data stage refuses the task otherwise.
    required_splits: tuple[str, ...] = ("train", "validation", "test")
    #: Mirror files of the published release: relative path -> (records, sha256), checked by the data stage.
    mirror_files: Mapping[str, tuple[int, str]] = {}
    #: Records per split of the default hub dataset (the release the mirror files hold), checked by the data
    #: stage while the config reads that dataset; a split read short (an interrupted download) stops it.
    hub_records: Mapping[str, int] = {}

    def default_hub_id(self) -> str | None:
        """The hub dataset this task reads unless the config names another."""
        return (self.schema.get("properties", {}).get("hub", {}).get("default") or {}).get("id")

    def prepare(self, options: Mapping[str, Any], mirror: Path | None, seed: int) -> Prepared:
        """Load (hub or ``mirror``), validate and format every split."""
        raise NotImplementedError

    def scorer_module(self) -> ModuleType:
        return import_module(self.scorer, package="tunebench.tasks.scoring")

    def scorer_sources(self) -> tuple[str, ...]:
        """The scorer's source files (paths inside the package) that the scoring stage's digest hashes."""
        if not self.scorer:
            return ()
        return ("tasks/scoring/__init__.py", f"tasks/scoring/{self.scorer.lstrip('.')}.py") + self.scorer_helpers

    #: Further scoring modules the scorer runs (package paths), e.g. SQL's test-suite builder.
    scorer_helpers: tuple[str, ...] = ()
    #: The ``evaluation`` keys the scorer reads (its keywords); only they reach the task's scoring digest.
    scorer_options: tuple[str, ...] = ()

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metric names in display order: the scorer's, declared there only."""
        return tuple(self.scorer_module().METRICS) if self.scorer else ()

    def score(self, prediction: str, gold: Mapping[str, Any], **options: Any) -> dict[str, bool | None]:
        """Verdict per metric for one raw model output; ``None`` marks a row that cannot be scored.

        ``options`` come from the ``evaluation`` config section (e.g. ``sql_databases``, ``sql_timeout_s``).
        """
        return self.scorer_module().score(prediction, gold, **options)

    def extract(self, prediction: str) -> Any:
        """The part of a raw output the scorer compares (recorded in predictions.jsonl), or ``None``."""
        return self.scorer_module().extract(prediction)

    def baseline_messages(
        self, row: Mapping[str, Any], train: list[Mapping[str, Any]], variant: str, options: Mapping[str, Any]
    ) -> list[dict[str, str]]:
        """Chat messages (``role``/``content``) of the prompted baseline for ``row``.

        ``train`` is the task's training split, from which few-shot examples are picked
        deterministically; ``options`` is the task's own config section (``few_shot``, ...).
        """
        raise NotImplementedError
