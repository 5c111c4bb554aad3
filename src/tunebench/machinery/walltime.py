"""Wall time and GPU-hours of the training jobs, and whether each finishes within its runtime and attempts.

A job's work is the tokens its model computes on (padding included) over all epochs, plus the
validation pass after each epoch, divided by a throughput figure for its GPU model, method and size
(``resources/throughput.yaml``, every figure with its source). The tokens of an epoch are counted
from the prepared training data when it exists and the model's tokenizer loads; otherwise they are
estimated from the dataset's row count and mean tokens per example (``resources/task_tokens.yaml``).

A job killed at its wall time loses the work done since its last resume state; SLURM resubmits it
(the profile's ``retries``) and it continues from that state. It fits when ``attempts`` runs of
``runtime`` minutes, each losing the startup and the unsaved tail, cover the work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources as package_files
from pathlib import Path
from typing import Any

import yaml

from .. import config as tb_config
from ..util.errors import ConfigError

# Minutes of each attempt before the first step: loading and sharding the model, ZeRO-3's first
# gathers, the resume state read back (a 70B state is several hundred GB).
STARTUP_MINUTES = 20
# A validation token is one forward; a training token with gradient checkpointing costs about four
# (forward, recomputed forward, backward at twice a forward).
VALIDATION_COST = 0.25
# Study A's layout: the baseline the paper config's batching is compared against.
STUDY_LAYOUT = {"batching": "pad_to", "pad_to": 512}


def _resource(name: str) -> dict:
    return yaml.safe_load((package_files.files("tunebench") / "resources" / name).read_text())


@dataclass(frozen=True)
class EpochTokens:
    """One epoch of one job: its examples, real tokens, tokens computed on, and their validation pass."""

    rows: int  # examples (before packing)
    layout_rows: int  # rows the layout makes of them (packing joins several examples)
    real: int
    computed: int
    validation_computed: int
    how: str  # counted or estimated, and from what


def computed_tokens(lengths: list[int], training: Mapping[str, Any], batch_size: int) -> tuple[int, int]:
    """(tokens computed on, layout rows) of examples of ``lengths`` in the given order under the training's layout."""
    layout = training["batching"]
    if layout == "packing":
        rows, used = [], 0
        for length in lengths:
            if not rows or used + length > training["max_length"]:
                rows.append(0)
                used = 0
            rows[-1] += length
            used += length
    else:
        rows = list(lengths)
    computed = 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        if layout == "pad_to":
            computed += training["pad_to"] * len(batch)
        elif layout == "padding_free":
            computed += sum(batch)
        else:
            computed += max(batch) * len(batch)
    return computed, len(rows)


def counted(config: tb_config.Experiment, run: tb_config.Run, training: Mapping, data_root: Path) -> EpochTokens | None:
    """The epoch counted from ``data_root/TASK``'s prepared splits with the model's tokenizer, or None."""
    from ..stages import formats, models
    from ..stages.train import batching
    from ..stages.train.loop import epoch_batches
    from ..tasks import data
    from ..util.errors import UserError

    directory = Path(data_root) / run.task
    if not all((directory / f"{split}.jsonl").is_file() for split in ("train", "validation")):
        return None
    try:
        tokenizer = models.load_tokenizer(config["models"][run.model]["base"])
    except (UserError, OSError, ValueError):
        return None  # no tokenizer offline: the estimate stands in
    tokenizer.add_tokens(formats.added_tokens(run.format), special_tokens=True)
    task = config.tasks.get(run.task)
    split = {}
    for name in ("train", "validation"):
        path = directory / f"{name}.jsonl"
        split[name], _ = batching.encode_rows(
            tokenizer, run.format, task, data.read_rows(path), training["loss_on"], training["max_length"], str(path)
        )
    order = [example for batch in epoch_batches(split["train"], 1, training) for row in batch for example in row]
    lengths = [len(example.input_ids) for example in order]
    computed, layout_rows = computed_tokens(lengths, training, training["batch_size"])
    validation, _ = computed_tokens([len(e.input_ids) for e in split["validation"]], training, training["batch_size"])
    return EpochTokens(len(lengths), layout_rows, sum(lengths), computed, validation, f"counted from {directory}")


def estimated(run: tb_config.Run, training: Mapping) -> EpochTokens:
    """The epoch estimated from the shipped row counts and mean example lengths of the task and format."""
    table = _resource("task_tokens.yaml")
    entry = (table.get(run.task) or {}).get(run.format)
    if entry is None:
        raise ConfigError(
            f"tunebench plan has no token estimate for task {run.task} in format {run.format}; "
            f"prepare its data (tunebench data {run.task}) so that the plan counts it."
        )
    rows, mean = entry["train_rows"], entry["mean_tokens"]
    real = round(rows * mean)
    layout = training["batching"]
    if layout == "pad_to":
        computed, layout_rows = rows * training["pad_to"], rows
    elif layout == "pad_to_longest":
        computed, layout_rows = round(rows * entry["longest_in_batch_16"]), rows
    elif layout == "packing":
        computed, layout_rows = real, math.ceil(real / training["max_length"])
    else:
        computed, layout_rows = real, rows
    validation = computed * entry["validation_rows"] / rows
    how = f"estimated: {rows:,} rows × {mean:.0f} tokens ({entry['source']})"
    return EpochTokens(rows, layout_rows, real, computed, round(validation), how)


@dataclass(frozen=True)
class Timing:
    """One training job's time against its runtime."""

    job: str
    task: str
    key: str  # its row of the resources table
    tokens: EpochTokens
    epochs: int
    gpus: int
    rate: float | None  # computed tokens per second per GPU
    rate_source: str
    steps_per_epoch: int
    every_steps: int | None
    runtime_min: int
    attempts: int
    max_resume_min: float

    @property
    def epoch_hours(self) -> float | None:
        if self.rate is None:
            return None
        work = self.tokens.computed + self.tokens.validation_computed * VALIDATION_COST
        return work / (self.rate * self.gpus) / 3600

    @property
    def hours(self) -> float | None:
        return None if self.epoch_hours is None else self.epoch_hours * self.epochs

    @property
    def gpu_hours(self) -> float | None:
        return None if self.hours is None else self.hours * self.gpus

    @property
    def resume_minutes(self) -> float | None:
        """Longest stretch of work between two resume states (the validation pass ends an epoch's)."""
        if self.epoch_hours is None:
            return None
        epoch = self.epoch_hours * 60
        if not self.every_steps or self.every_steps >= self.steps_per_epoch:
            return epoch
        return epoch * self.every_steps / self.steps_per_epoch

    @property
    def problems(self) -> list[str]:
        if self.hours is None:
            return []
        usable = self.runtime_min - STARTUP_MINUTES
        interval = self.resume_minutes
        if interval > usable:
            return [
                f"would never write a resume state: they are {interval:.0f} min apart but a {self.runtime_min}-min "
                f"runtime leaves {usable} min after the startup"
            ]
        found = []
        if interval > self.max_resume_min:
            found.append(f"writes resume states {interval:.0f} min apart (at most {self.max_resume_min:.0f} allowed)")
        saved = math.floor(usable / interval) * interval * self.attempts
        if saved < self.hours * 60:
            found.append(
                f"needs {self.hours:.1f} h but {self.attempts} attempts of {self.runtime_min} min keep only "
                f"{saved / 60:.1f} h of work"
            )
        return found

    def refusal(self) -> str:
        target = min(self.max_resume_min, (self.runtime_min - STARTUP_MINUTES) / 2)
        steps = max(1, math.floor(self.steps_per_epoch * target / (self.epoch_hours * 60)))
        hint = f"set training.checkpoint_every_steps to at most {steps}"
        # As it is: the runtime that holds enough whole intervals between resume states on each attempt.
        interval = self.resume_minutes
        per_attempt = math.ceil(math.ceil(self.hours * 60 / interval) / self.attempts)
        runtime = math.ceil(per_attempt * interval) + STARTUP_MINUTES
        return (
            f"train job {self.job} {' and '.join(self.problems)}; {hint} for it or raise "
            f"{self.key}.runtime_by_task.{self.task} to at least {runtime} min."
        )


def rate_of(gpu_model: str | None, method: str, size: str) -> tuple[float | None, str]:
    entry = ((_resource("throughput.yaml").get(gpu_model or "cpu") or {}).get(method) or {}).get(size)
    if entry is None:
        return None, f"no throughput figure for {gpu_model or 'cpu'}/{method}/{size}"
    return float(entry["tokens_per_s"]), entry["source"]


def timings(
    config: tb_config.Experiment,
    attempts: int,
    max_resume_min: float,
    data_root: Path,
    layout: Mapping[str, Any] | None = None,
) -> list[Timing]:
    """The time of every training job; ``layout`` overrides the runs' batching keys (study A's, for comparison)."""
    found = []
    epochs_of: dict = {}
    for run in config.finetune:
        training = {**run.training, **(layout or {})}
        rows = config.resources("train", run.model, run.method, run.task)
        key = (run.task, run.format, run.model, tuple(sorted(training.items(), key=str)))
        if key not in epochs_of:
            epochs_of[key] = counted(config, run, training, data_root) or estimated(run, training)
        tokens = epochs_of[key]
        size = config["models"][run.model].get("resources_size") or config["models"][run.model]["size"]
        rate, source = rate_of(rows.get("gpu_model") if rows["gpu"] else None, run.method, size)
        per_step = training["batch_size"] * rows["processes"] * training["gradient_accumulation"]
        found.append(
            Timing(
                job=f"{run.task}/{run.model}/{run.run}",
                task=run.task,
                key=config.resources_key("train", run.model, run.method),
                tokens=tokens,
                epochs=training["epochs"],
                gpus=max(1, rows["gpus"]),
                rate=rate,
                rate_source=source,
                steps_per_epoch=math.ceil(tokens.layout_rows / per_step),
                every_steps=training["checkpoint_every_steps"],
                runtime_min=rows["runtime"],
                attempts=attempts,
                max_resume_min=max_resume_min,
            )
        )
    return found


def total_gpu_hours(found: list[Timing]) -> float:
    return sum(t.gpu_hours for t in found if t.gpu_hours is not None)


def render(found: list[Timing]) -> str:
    header = (
        f"{'training job':<42} {'tokens/epoch':>12} {'computed':>9} {'rate/GPU':>8} {'hours':>7} {'GPU-h':>8} "
        f"{'resume':>7} {'runtime':>7}  fit  tokens; rate"
    )
    lines = [header]
    for t in found:
        hours = f"{t.hours:7.1f}" if t.hours is not None else f"{'?':>7}"
        gpu_hours = f"{t.gpu_hours:8.0f}" if t.gpu_hours is not None else f"{'?':>8}"
        resume = f"{t.resume_minutes:5.0f} m" if t.resume_minutes is not None else f"{'?':>7}"
        rate = f"{t.rate:8.0f}" if t.rate is not None else f"{'?':>8}"
        lines.append(
            f"{t.job:<42} {t.tokens.real / 1e6:10.2f} M {t.tokens.computed / t.tokens.real:8.2f}× {rate} {hours} "
            f"{gpu_hours} {resume} {t.runtime_min / 60:5.1f} h  {'yes' if not t.problems else 'NO ':<4} "
            f"{t.tokens.how}; {t.rate_source}"
        )
    return "\n".join(lines)
