"""How tasks, methods, metrics and runs are named in tables, figures and the paper."""

from __future__ import annotations

from collections.abc import Mapping

from ..stages.train import methods
from ..tasks import TaskSet

METHOD_LABELS = {**{name: method.label for name, method in methods.REGISTRY.items()}, "prompted": "Prompted"}
FORMAT_LABELS = {"special_tokens": "special tokens", "instruction": "instruction", "chat": "chat template"}


def task(name: str, known: TaskSet) -> str:
    """The task's label among ``known``, the experiment's tasks (a declared task may name its own)."""
    return known.label(name)


def method(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def metric(name: str) -> str:
    text = name.replace("_", " ")
    return text[:1].upper() + text[1:]


def fmt(name: str) -> str:
    return FORMAT_LABELS.get(name, name.replace("_", " "))


def run(row: Mapping, known: TaskSet) -> str:
    """A run as a reader names it: ``Prompted (stepwise)``, ``LoRA``, ``LoRA, two-stage (MathQA → GSM8K)``."""
    if row["stage"] == "baseline":
        variant = row.get("variant") or "default"
        return method("prompted") + ("" if variant == "default" else f" ({variant.replace('_', ' ')})")
    label = method(row["method"])
    if row.get("format") and row["format"] != "special_tokens":
        label += f", {fmt(row['format'])} format"
    if row["stage"] == "two_stage":
        first = str(row.get("init_from") or "").split("/")[0]
        label += f", two-stage ({task(first, known)} → {task(row['task'], known)})"
    replicate_of = row.get("replicate_of")
    if isinstance(replicate_of, str) and replicate_of:  # a run repeated with another training seed
        label += f", seed {int(row['seed'])}"
    return label


def short_run(row: Mapping) -> str:
    """Size and method only: ``13B full``, ``135M LoRA two-stage``, ``7B prompted``."""
    if row["stage"] == "baseline":
        return f"{row['size']} prompted"
    return f"{row['size']} {method(row['method'])}" + (" two-stage" if row["stage"] == "two_stage" else "")


def model(row: Mapping) -> str:
    return str(row["model"])
