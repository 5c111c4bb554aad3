"""Results stage: tidy metrics, tables, figures and the paper, all derived from ``results/``.

The workflow must know every output file before any run has finished, so :func:`plan` derives the
tables and figures from the configuration alone. Each is one :class:`Output` entry: its file name,
what draws it, its caption and its place in the report. The rules, the report, the commands that
draw them (reading only ``results/metrics.csv`` and ``results/learning_curves.csv``) and the paper
all read these entries; none takes a name apart again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import config as tb_config
from .. import tasks as tb_tasks
from ..stages.train import methods
from ..util.errors import UserError
from . import claims as tb_claims
from . import labels

#: Display order of methods (the registry's) and stages everywhere (tables, figures, paper).
METHODS = methods.names()
STAGES = ("baseline", "finetuned", "two_stage")


@dataclass(frozen=True)
class Output:
    """One table or figure of the results stage."""

    name: str  # file name without extension, under results/tables/ or results/figures/
    kind: str  # "table" or "figure"
    draws: str  # the drawing function: a key of tables.BUILDERS or figures.BUILDERS
    task: str | None = None  # the task a per-task drawing shows
    caption: str = ""  # a figure's caption in the paper (a table's caption comes with its data)

    @property
    def report_caption(self) -> str:
        """The report's caption file (relative to workflow/rules/): one per drawing, shared by its tasks."""
        return f"../report/{self.kind}_{self.draws}.rst"

    @property
    def category(self) -> str:
        return "Tables" if self.kind == "table" else "Figures"

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class Plan:
    """The tables and figures a configuration produces, in the order the report and paper list them."""

    tasks: tuple[str, ...]  # evaluated tasks, in the order of the experiment's scored tasks
    outputs: tuple[Output, ...]
    ablations: tuple[str, ...]  # tasks with a prompt-format ablation
    two_stage: tuple[str, ...]  # tasks with a two-stage run
    known: tb_tasks.TaskSet  # the experiment's tasks, which label the outputs

    def of(self, kind: str) -> tuple[Output, ...]:
        return tuple(output for output in self.outputs if output.kind == kind)

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(output.name for output in self.of("table"))

    @property
    def figures(self) -> tuple[str, ...]:
        return tuple(output.name for output in self.of("figure"))

    def output(self, kind: str, name: str) -> Output:
        return self.named(kind, [name])[0]

    def drawing(self, kind: str, draws: str, task: str | None = None) -> Output | None:
        """The table or figure that ``draws`` (of ``task``), or None when this config has none."""
        return next((o for o in self.of(kind) if o.draws == draws and o.task == task), None)

    def named(self, kind: str, names: Iterable[str]) -> list[Output]:
        """The requested tables or figures (all of them when none is named); unknown names are refused."""
        available = {output.name: output for output in self.of(kind)}
        names = list(names)
        unknown = [name for name in names if name not in available]
        if unknown:
            raise UserError(
                f"this config has no {kind} named {', '.join(unknown)}; its {kind}s are {', '.join(available)}."
            )
        return [available[name] for name in names] if names else list(available.values())


#: The paper's caption of each kind of figure, by what draws it; ``{task}`` is the task's label.
FIGURE_CAPTIONS = {
    "task": (
        "{task}, one panel per metric. The dark part of a bar is the prompted chat model; the light part stacked on "
        "it is what fine-tuning with that method adds (hatched where it lost accuracy instead). Whiskers are "
        "bootstrap intervals; a dashed purple line marks a published GPT-4 figure where the study gives one."
    ),
    "learning_curves": (
        "Validation perplexity after each epoch; the star marks the checkpoint that was evaluated (the lowest "
        "perplexity)."
    ),
    "two_stage": (
        "{task}: the prompted model, the model fine-tuned on the task alone, and the model fine-tuned on a related "
        "task first; whiskers are bootstrap intervals."
    ),
    "gain_vs_cost": (
        "Gain of each fine-tuned model over the same model prompted, on the task's primary metric, against the "
        "device-hours spent training it."
    ),
    "ablation_format": (
        "{task}: special-token format against an instruction format, same model and method; whiskers are "
        "bootstrap intervals."
    ),
    "claims": (
        "The studies' claims on these runs: paired difference on the same test rows with its bootstrap interval, "
        "coloured by verdict."
    ),
}


def _figure(name: str, draws: str, known: tb_tasks.TaskSet, task: str | None = None) -> Output:
    caption = FIGURE_CAPTIONS[draws].format(task=labels.task(task, known) if task else "")
    return Output(name, "figure", draws, task, caption)


def format_ablation_tasks(finetune_runs) -> list[str]:
    """Tasks where one model and method were fine-tuned in more than one prompt format."""
    formats: dict[tuple[str, str, str], set[str]] = {}
    for run in finetune_runs:
        if run.evaluate and not run.init_from:
            formats.setdefault((run.task, run.model, run.method), set()).add(run.format)
    return sorted({key[0] for key, found in formats.items() if len(found) > 1})


def plan(config: tb_config.Experiment) -> Plan:
    finetune = config.finetune
    baselines = config.baselines
    evaluated = config.evaluated
    tasks = tuple(task for task in config.tasks.scored() if any(run.task == task for run in evaluated))
    ablations = tuple(format_ablation_tasks(finetune))
    two_stage = tuple(t for t in tasks if any(run.task == t and run.init_from and run.evaluate for run in finetune))
    has_finetuned = any(run.evaluate for run in finetune)
    runs = tb_claims.evaluated_runs(config)
    has_claims = any(tb_claims.pairs(claim, runs, config.tasks) for claim in tb_claims.load_claims())

    tables = [Output("main", "table", "main")] if tasks else []
    tables += [Output(task, "table", "task", task) for task in tasks]
    if any(task in tb_tasks.built_in() for task in tasks):  # the studies' figures are of their tasks only
        tables.append(Output("published", "table", "published"))
    if has_finetuned:
        tables.append(Output("cost", "table", "cost"))
    tables += [Output(f"ablation_format_{task}", "table", "ablation_format", task) for task in ablations]
    if has_claims:
        tables.append(Output("claims", "table", "claims"))
    if config["comparisons"]:
        tables.append(Output("comparisons", "table", "comparisons"))

    known = config.tasks
    figures = [_figure(f"{task}_accuracy", "task", known, task) for task in tasks]
    if finetune:
        figures.append(_figure("learning_curves", "learning_curves", known))
    figures += [_figure(f"two_stage_{task}", "two_stage", known, task) for task in two_stage]
    if has_finetuned and baselines:
        figures.append(_figure("gain_vs_cost", "gain_vs_cost", known))
    figures += [_figure(f"ablation_format_{task}", "ablation_format", known, task) for task in ablations]
    if has_claims:
        figures.append(_figure("claims", "claims", known))
    return Plan(tasks=tasks, outputs=tuple(tables + figures), ablations=ablations, two_stage=two_stage, known=known)
