"""The resolved experiment: what :func:`tunebench.config.validate` and :func:`tunebench.config.load` return.

An :class:`Experiment` is built once from a validated config. It holds the run matrix (every fine-tuned
and baseline :class:`Run`, indexed by task, model and run name, with each run's seed and stage settled),
the config's tasks (:class:`tunebench.tasks.TaskSet`), each run's method settings and each job's row of
the resources table. Stages, digests, the fit check, the results stage and the workflow read runs and
tasks from it instead of deriving them from the mapping again.

For the plain sections the experiment is read like the validated mapping (``experiment["models"]``): a
pragmatic choice that leaves the code reading sections as it is. Those sections are the validated
config's own dicts and must not be changed through the experiment.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .. import tasks as tb_tasks
from ..util.errors import ConfigError

#: The ``method`` of prompted baselines in metrics.json and results/metrics.csv.
PROMPTED = "prompted"

#: The run name and stage of a prompted baseline: ``baseline``, or ``baseline-VARIANT`` for another prompt variant.
BASELINE = "baseline"

#: Prompt format of the baselines: the chat model's own template.
BASELINE_FORMAT = "chat"


def is_baseline(run: str) -> bool:
    """Whether a run name is a prompted baseline's (the one place that decides it from the name)."""
    return run == BASELINE or run.startswith(f"{BASELINE}-")


def merge(base: dict, override: Mapping) -> dict:
    """``override`` over a deep copy of ``base``, section by section."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def entry_training(config: Mapping, entry: Mapping) -> dict:
    """The training settings of a finetune entry: its own keys over the section's, the seed settled
    (the training seed, else the config's)."""
    training = merge(config["training"], entry.get("training") or {})
    if training["seed"] is None:
        training["seed"] = config["seed"]
    return training


def run_name(method: str, tag: str | None) -> str:
    return f"{method}-{tag}" if tag else method


def seed_run_name(run: str, seed: int) -> str:
    return f"{run}-seed{seed}"


@dataclass(frozen=True)
class Run:
    """One run of the experiment matrix: a model fine-tuned with a method on a task, or a chat model
    prompted on it (method ``prompted``, stage ``baseline``). A training job and an evaluation read it."""

    task: str
    model: str
    run: str  # directory name: METHOD[-TAG][-seedN], or baseline[-VARIANT]
    method: str
    stage: str  # baseline, finetuned or two_stage
    format: str
    variant: str | None = None  # baseline prompt variant; None for fine-tuned runs
    training: dict = field(default_factory=dict)  # fine-tuned runs: merged settings, seed settled
    evaluate: bool = True
    init_from: tuple[str, str] | None = None  # (task, run) of the first stage, same model
    replicate_of: str | None = None  # the run this one repeats with another training seed

    @property
    def is_baseline(self) -> bool:
        return self.stage == BASELINE


def _finetune_runs(config: Mapping) -> tuple[Run, ...]:
    """Every run of ``experiments.finetune``; an entry's extra ``seeds`` follow its own runs."""
    runs = []
    for entry in config["experiments"]["finetune"]:
        training = entry_training(config, entry)
        init = entry["init_from"]
        for model in entry["models"]:
            for method in entry["methods"]:
                run = Run(
                    task=entry["task"],
                    model=model,
                    run=run_name(method, entry["tag"]),
                    method=method,
                    stage="two_stage" if init else "finetuned",
                    format=entry["format"],
                    training=training,
                    evaluate=entry["evaluate"],
                    init_from=(init["task"], run_name(method, init.get("tag"))) if init else None,
                )
                runs.append(run)
                for seed in entry["seeds"]:
                    runs.append(
                        replace(
                            run,
                            run=seed_run_name(run.run, seed),
                            training={**training, "seed": seed},
                            replicate_of=run.run,
                        )
                    )
    return tuple(runs)


def _baseline_runs(config: Mapping) -> tuple[Run, ...]:
    return tuple(
        Run(
            task=entry["task"],
            model=model,
            run=BASELINE if variant == "default" else f"{BASELINE}-{variant}",
            method=PROMPTED,
            stage=BASELINE,
            format=BASELINE_FORMAT,
            variant=variant,
        )
        for entry in config["experiments"]["baselines"]
        for model in entry["models"]
        for variant in entry["variants"]
    )


@dataclass(frozen=True, eq=False, repr=False)
class Experiment(Mapping):
    """A validated config resolved once: its run matrix, its tasks, and its sections read like a mapping."""

    config: Mapping[str, Any]  # the validated mapping (Snakemake's ``config`` in the workflow)
    tasks: tb_tasks.TaskSet
    finetune: tuple[Run, ...]  # every run of experiments.finetune, in config order
    baselines: tuple[Run, ...]  # every run of experiments.baselines, in config order
    _index: Mapping[tuple[str, str, str], Run] = field(repr=False)

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Experiment:
        """The experiment of a config that :func:`tunebench.config.validate` has checked and filled."""
        finetune = _finetune_runs(config)
        baselines = _baseline_runs(config)
        index = {(run.task, run.model, run.run): run for run in finetune + baselines}
        return cls(config, tb_tasks.TaskSet.of(config), finetune, baselines, MappingProxyType(index))

    def __getitem__(self, key: str) -> Any:
        return self.config[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.config)

    def __len__(self) -> int:
        return len(self.config)

    def __repr__(self) -> str:
        return f"Experiment({len(self.finetune)} fine-tuned runs, {len(self.baselines)} baselines)"

    @property
    def evaluated(self) -> tuple[Run, ...]:
        """The runs that are evaluated: fine-tuned ones with ``evaluate``, then the baselines."""
        return tuple(run for run in self.finetune if run.evaluate) + self.baselines

    def run(self, task: str, model: str, run: str, *, finetuned: bool = False) -> Run:
        """The run named by (task, model, run); ``finetuned`` refuses a baseline's name as no training run."""
        found = self._index.get((task, model, run))
        if is_baseline(run) and not finetuned:
            if found is None:
                raise ConfigError(
                    f"no baseline experiment evaluates {task}/{model}/{run}; add it to experiments.baselines."
                )
            return found
        if found is not None and not found.is_baseline:
            return found
        if self.config["models"].get(model, {}).get("api"):
            raise ConfigError(
                f"model {model} is served through an API and cannot be fine-tuned, so {task}/{model}/{run} does not "
                "exist; evaluate it as a prompted baseline (--run baseline) listed under experiments.baselines."
            )
        raise ConfigError(f"no finetune experiment trains {task}/{model}/{run}; add it to experiments.finetune.")

    def method_settings(self, run: Run) -> dict:
        """The run's method settings with its LoRA preset expanded and its learning rate resolved."""
        settings = copy.deepcopy(self.config["methods"][run.method])
        if "lora" in settings:
            settings["lora"] = copy.deepcopy(self.config["lora_presets"][settings["lora"]])
        if run.training.get("learning_rate") is not None:
            settings["learning_rate"] = run.training["learning_rate"]
        return settings

    def resources_key(self, kind: str, model: str, method: str | None = None) -> str:
        """The config key of a job's row of the resources table, for messages."""
        return f"resources.{kind}.{self._size(model)}" + (f".{method}" if kind == "train" and method else "")

    def resources(self, kind: str, model: str, method: str | None = None, task: str | None = None) -> dict:
        """Scheduler resources of a job: the per-size (and per-method) row over the defaults.

        A row describes the nodes a job runs on: ``nodes``, ``gpu`` and ``mem_mb`` per node, ``threads``
        per node. The process counts are derived here and nowhere else: ``processes_per_node`` (the
        row's ``processes``, else one per GPU, else 1) and ``processes`` (all nodes together). A row's
        ``runtime_by_task`` gives ``task``'s job its own wall time.
        """
        table = self.config["resources"]
        merged = dict(table["default"])
        row = table.get(kind, {}).get(self._size(model), {})
        if kind == "train":
            row = row.get(method, {}) if method else {}
        merged.update(row)
        merged["runtime"] = (merged.pop("runtime_by_task", None) or {}).get(task, merged["runtime"])
        merged["processes_per_node"] = merged.get("processes") or max(1, merged["gpu"])
        merged["processes"] = merged["nodes"] * merged["processes_per_node"]
        merged["gpus"] = merged["nodes"] * merged["gpu"]
        return merged

    def _size(self, model: str) -> str:
        """The size that chooses a model's rows of the resources table."""
        return self.config["models"][model].get("resources_size") or self.config["models"][model]["size"]
