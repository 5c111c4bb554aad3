"""Results stage: tidy metrics, tables, figures and the paper, all derived from ``results/``.

The workflow must know every output file before any run has finished, so :func:`plan` derives the
names of the tables and figures from the configuration alone; the commands that draw them then read
only ``results/metrics.csv`` and ``results/learning_curves.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .. import config as tb_config
from .. import tasks as tb_tasks
from ..errors import UserError
from . import claims as tb_claims

#: Display order of methods and stages everywhere (tables, figures, paper).
METHODS = ("full", "lora", "qlora")
STAGES = ("baseline", "finetuned", "two_stage")
#: The ``method`` column of prompted-baseline rows in ``results/metrics.csv``.
PROMPTED = "prompted"


@dataclass(frozen=True)
class Plan:
    """Names of the tables and figures a configuration produces."""

    tasks: tuple[str, ...]  # evaluated tasks, in the order of tunebench.tasks.scored()
    tables: tuple[str, ...]
    figures: tuple[str, ...]
    ablations: tuple[str, ...]  # tasks with a prompt-format ablation
    two_stage: tuple[str, ...]  # tasks with a two-stage run


def format_ablation_tasks(finetune_runs) -> list[str]:
    """Tasks where one model and method were fine-tuned in more than one prompt format."""
    formats: dict[tuple[str, str, str], set[str]] = {}
    for run in finetune_runs:
        if run.evaluate and not run.init_from:
            formats.setdefault((run.task, run.model, run.method), set()).add(run.format)
    return sorted({key[0] for key, found in formats.items() if len(found) > 1})


def plan(config: Mapping) -> Plan:
    finetune = tb_config.finetune_runs(config)
    baselines = tb_config.baseline_runs(config)
    evaluated = [run for run in finetune if run.evaluate] + baselines
    tasks = tuple(task for task in tb_tasks.scored() if any(run.task == task for run in evaluated))
    ablations = tuple(format_ablation_tasks(finetune))
    two_stage = tuple(t for t in tasks if any(run.task == t and run.init_from and run.evaluate for run in finetune))
    has_finetuned = any(run.evaluate for run in finetune)

    tables = ["main", *tasks] if tasks else []
    figures = [f"{task}_accuracy" for task in tasks]
    if tasks:
        tables.append("published")
    if has_finetuned:
        tables.append("cost")
    tables += [f"ablation_format_{task}" for task in ablations]
    if finetune:
        figures.append("learning_curves")
    figures += [f"two_stage_{task}" for task in two_stage]
    if has_finetuned and baselines:
        figures.append("gain_vs_cost")
    figures += [f"ablation_format_{task}" for task in ablations]
    runs = tb_claims.evaluated_runs(config)
    if any(tb_claims.pairs(claim, runs) for claim in tb_claims.load_claims()):
        tables.append("claims")
        figures.append("claims")
    return Plan(tasks=tasks, tables=tuple(tables), figures=tuple(figures), ablations=ablations, two_stage=two_stage)


def select(names: list[str], available: list[str], kind: str) -> list[str]:
    """The requested tables or figures (all ``available`` when none is named); unknown names are refused."""
    unknown = [name for name in names if name not in available]
    if unknown:
        raise UserError(f"this config has no {kind} named {', '.join(unknown)}; its {kind}s are {', '.join(available)}.")
    return list(names) or list(available)
