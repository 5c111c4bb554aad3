"""Collect every evaluation and training record of a configuration into two tidy CSV files.

``results/metrics.csv`` has one row per (task, model, size, method, stage, metric) — plus the run
name, since a prompt-variant baseline or a format ablation shares the rest of that key — with the
metric's value, interval and count, and the facts of the run that produced it: training tokens, wall
times, throughput, peak memory, prompt tokens per example. ``results/learning_curves.csv`` has one
row per trained epoch. Values are fractions (0–1); tables and figures show percentages.

The configuration says which runs exist and what they are (model size, method, stage, format);
the JSON files only supply numbers, so a stale or misplaced file is caught rather than mislabelled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .. import config as tb_config
from .. import tasks as tb_tasks
from ..config import digests as tb_digests
from ..util import fileio
from ..util.errors import DataError
from . import METHODS, STAGES

#: The columns naming a run, first in both tables.
RUN_COLUMNS = ["task", "model", "size", "params_b", "method", "run", "stage", "format"]
METRIC_COLUMNS = [
    *RUN_COLUMNS,
    "variant",
    "init_from",
    "metric",
    "primary",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "n_examples",
    "unscorable",
    "train_tokens",
    "train_tokens_total",
    "train_wall_time_s",
    "train_cpu_time_s",
    "train_tokens_per_s",
    "peak_memory_mb",
    "device",
    "device_kind",
    "num_processes",
    "device_hours",
    "device_hours_total",
    "train_wall_time_s_total",
    "epochs_run",
    "best_epoch",
    "best_validation_perplexity",
    "trainable_params",
    "total_params",
    "eval_wall_time_s",
    "eval_tokens_per_s",
    "prompt_tokens_mean",
    "generated_tokens_mean",
    "eval_batch_size",
]
#: Columns of API baselines, present in metrics.csv only when the config has an api model.
API_COLUMNS = ["api_requests", "api_retries", "api_failed_rows", "api_cost_per_1k_queries_usd"]
#: Columns of runs repeated with other training seeds, present only when the config has such runs:
#: the run each repeats (blank for every other run) and its training seed.
SEED_COLUMNS = ["replicate_of", "seed"]
CURVE_COLUMNS = [
    *RUN_COLUMNS,
    "init_from",
    "epoch",
    "train_loss",
    "validation_loss",
    "validation_perplexity",
    "wall_time_s",
    "selected",
]
TEXT_COLUMNS = {
    "replicate_of",
    "task",
    "model",
    "size",
    "method",
    "run",
    "stage",
    "format",
    "variant",
    "init_from",
    "metric",
    "device",
    "device_kind",
}

_RERUN = "re-run the workflow step that writes it"


def read_json(path: Path, step: str) -> dict:
    if not path.is_file():
        raise DataError(
            f"{path} is missing; run the {step} step for it first (snakemake builds it as an input of this step)."
        )
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); delete it and {_RERUN}.") from None
    except ValueError:  # an integer beyond Python's 4,300-digit conversion limit
        raise DataError(f"{path} holds a number too long to read; delete it and {_RERUN}.") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path} must hold a JSON object; delete it and {_RERUN}.")
    return doc


def number(doc: Mapping, key: str, path: Path, required: bool = True) -> float | None:
    """A finite number (or None where allowed) from ``doc[key]``; anything else names the key."""
    value = doc.get(key)
    if value is None:
        if required:
            raise DataError(f"{path} has no value for {key}; delete it and {_RERUN}.")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{path}: {key} is {value!r} but must be a finite number; delete the file and {_RERUN}.")
    return float(value)


def _check_identity(doc: Mapping, path: Path, **expected: str) -> None:
    for key, want in expected.items():
        found = doc.get(key)
        if found is not None and found != want:
            raise DataError(
                f"{path} says {key} is {found!r} but lies in the directory of {want!r}; delete the stale file and "
                f"{_RERUN}."
            )


def size_value(model: Mapping) -> float:
    """Parameters in billions: the config's params_b, else parsed from the size label (135M, 7B)."""
    if model["params_b"] is not None:
        return float(model["params_b"])
    label = model["size"].strip().upper()
    scale = {"K": 1e-6, "M": 1e-3, "B": 1.0, "T": 1e3}
    try:
        return float(label[:-1]) * scale[label[-1]]
    except (KeyError, ValueError, IndexError):
        return math.nan


def _eval_rows(config: tb_config.Experiment, run, results: Path) -> list[dict]:
    path = results / "eval" / run.task / run.model / run.run / "metrics.json"
    task = config.tasks.get(run.task)
    doc = read_json(path, "evaluate")
    _check_identity(doc, path, task=run.task, model=run.model, run=run.run)
    # Made by other code or under other settings (an edited config, a results/ copied from elsewhere): refuse to mix.
    tb_digests.check_code(
        doc,
        {"generate": tb_digests.generate_code(task), "score": tb_digests.score_code(task)},
        path,
        "re-run its evaluation (snakemake re-runs it when the code changed)",
    )
    tb_digests.check_recorded(
        doc,
        tb_digests.score_hash(config, run.task, run.model, run.run),
        path,
        "re-run its evaluation (snakemake re-runs it when the config changed) or restore the config",
    )
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise DataError(f"{path} has no metrics object; delete it and {_RERUN}.")
    order = list(task.metrics) + [m for m in metrics if m not in task.metrics]
    facts = {
        "n_examples": number(doc, "n", path),
        "unscorable": number(doc, "unscorable", path, required=False) or 0,
        "eval_wall_time_s": number(doc, "wall_time_s", path, required=False),
        "eval_tokens_per_s": number(doc, "tokens_per_s", path, required=False),
        "prompt_tokens_mean": number(doc, "prompt_tokens_mean", path, required=False),
        "generated_tokens_mean": number(doc, "generated_tokens_mean", path, required=False),
        "eval_batch_size": number(doc, "batch_size", path, required=False),
    }
    rows = []
    for name in order:
        if name not in metrics:
            continue
        entry = metrics[name]
        where = path.with_name(f"{path.name} (metric {name})")
        if not isinstance(entry, dict):
            raise DataError(
                f"{path}: metrics.{name} must be an object with value, ci_low, ci_high and n; delete the file and "
                f"{_RERUN}."
            )
        values = {k: number(entry, k, where, required=False) for k in ("value", "ci_low", "ci_high")}
        for key, value in values.items():
            if value is not None and not 0 <= value <= 1:
                raise DataError(
                    f"{path}: metrics.{name}.{key} is {value} but must be a fraction between 0 and 1; delete the file "
                    f"and {_RERUN}."
                )
        rows.append(
            {"metric": name, "primary": name == task.primary_metric, **values, "n": number(entry, "n", where), **facts}
        )
    return rows


def _train_record(config: tb_config.Experiment, task: str, model: str, run_name: str, results: Path) -> dict:
    """Facts of one training run (run.json, best.json, step throughput from history.jsonl)."""
    folder = results / "train" / task / model / run_name
    record = read_json(folder / "run.json", "train")
    _check_identity(record, folder / "run.json", task=task, model=model, run=run_name)
    tb_digests.check_recorded(
        record,
        tb_digests.train_hash(config, task, model, run_name),
        folder / "run.json",
        "re-run its training (snakemake re-runs it when the config changed) or restore the config",
    )
    best = read_json(folder / "best.json", "train")
    steps = [line for line in read_history(folder / "history.jsonl") if line["kind"] == "step"]
    path = folder / "run.json"
    wall = number(record, "wall_time_s", path)
    cpu = number(record, "cpu_time_s", path)
    tokens = number(record, "train_tokens", path)
    processes = number(record, "num_processes", path, required=False) or 1
    device = str(record.get("device") or "unknown")
    kind = "CPU" if device.lower().startswith("cpu") else "GPU"
    # A CPU-hour is an hour of CPU time the training processes used (a core granted but idle costs nothing); a
    # GPU-hour is one GPU held for an hour, wall time × the job's GPUs (one process each), busy or waiting.
    hours = cpu / 3600 if kind == "CPU" else wall / 3600 * processes
    rates = [s["tokens_per_s"] for s in steps if isinstance(s.get("tokens_per_s"), (int, float))]
    return {
        "train_tokens": tokens,
        "train_wall_time_s": wall,
        "train_cpu_time_s": cpu,
        "train_tokens_per_s": sum(rates) / len(rates) if rates else (tokens / wall if wall else None),
        "peak_memory_mb": number(record, "peak_memory_mb", path, required=False),
        "device": device,
        "device_kind": kind,
        "num_processes": processes,
        "device_hours": hours,
        "epochs_run": number(record, "epochs_run", path, required=False),
        "best_epoch": number(best, "epoch", folder / "best.json"),
        "best_validation_perplexity": number(best, "validation_perplexity", folder / "best.json", required=False),
        "trainable_params": number(record, "trainable_params", path, required=False),
        "total_params": number(record, "total_params", path, required=False),
    }


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path} is missing; run the train step for it first.")
    lines = []
    for number, line in fileio.read_jsonl(path, f"delete the run directory and {_RERUN}"):
        if not isinstance(line, dict) or line.get("kind") not in ("step", "epoch"):
            raise DataError(
                f"{path} line {number} must be an object whose kind is step or epoch; delete the run directory and "
                f"{_RERUN}."
            )
        lines.append(line)
    return lines


def _model_columns(config: Mapping, model: str) -> dict:
    entry = config["models"][model]
    return {"model": model, "size": entry["size"], "params_b": size_value(entry)}


def collect_metrics(config: tb_config.Experiment, results: Path) -> pd.DataFrame:
    results = Path(results)
    rows: list[dict] = []
    records: dict[tuple[str, str, str], dict] = {}

    def record(task, model, run_name):
        key = (task, model, run_name)
        if key not in records:
            records[key] = _train_record(config, task, model, run_name, results)
        return records[key]

    for run in config.baselines:
        base = {
            "task": run.task,
            **_model_columns(config, run.model),
            "method": tb_config.PROMPTED,
            "run": run.run,
            "stage": "baseline",
            "format": "chat",
            "variant": run.variant,
            "init_from": "",
        }
        if config["models"][run.model].get("api"):
            base.update(_api_facts(results / "eval" / run.task / run.model / run.run / "metrics.json"))
        rows += [{**base, **row} for row in _eval_rows(config, run, results)]
    for run in config.finetune:
        if not run.evaluate:
            continue
        facts = dict(record(run.task, run.model, run.run))
        facts["train_tokens_total"] = facts["train_tokens"]
        facts["device_hours_total"] = facts["device_hours"]
        facts["train_wall_time_s_total"] = facts["train_wall_time_s"]
        init_from = ""
        if run.init_from:
            first = record(run.init_from[0], run.model, run.init_from[1])
            facts["train_tokens_total"] += first["train_tokens"]
            facts["device_hours_total"] += first["device_hours"]
            facts["train_wall_time_s_total"] += first["train_wall_time_s"]
            init_from = "/".join(run.init_from)
        base = {
            "task": run.task,
            **_model_columns(config, run.model),
            "method": run.method,
            "run": run.run,
            "stage": run.stage,
            "format": run.format,
            "variant": "",
            "init_from": init_from,
            "replicate_of": run.replicate_of or "",
            "seed": run.training["seed"],
        }
        rows += [{**base, **facts, **row} for row in _eval_rows(config, run, results)]
    api_models = any(config["models"][run.model].get("api") for run in config.baselines)
    replicated = any(run.replicate_of for run in config.finetune)
    columns = METRIC_COLUMNS + (API_COLUMNS if api_models else []) + (SEED_COLUMNS if replicated else [])
    frame = pd.DataFrame(rows, columns=columns)
    return sort_runs(frame, config.tasks)


def _api_facts(path: Path) -> dict:
    """Requests, retries, failed rows and price of an API baseline, from its metrics.json."""
    facts = read_json(path, "evaluate").get("api")
    if not isinstance(facts, dict):
        raise DataError(f"{path} has no api object, though its model is an api model; delete it and {_RERUN}.")
    return {
        "api_requests": number(facts, "requests", path),
        "api_retries": number(facts, "retries", path),
        "api_failed_rows": number(facts, "failed_rows", path),
        "api_cost_per_1k_queries_usd": number(facts, "cost_per_1k_queries_usd", path, required=False),
    }


def collect_curves(config: tb_config.Experiment, results: Path) -> pd.DataFrame:
    results = Path(results)
    rows = []
    for run in config.finetune:
        folder = results / "train" / run.task / run.model / run.run
        best = read_json(folder / "best.json", "train")
        best_epoch = number(best, "epoch", folder / "best.json")
        for line in read_history(folder / "history.jsonl"):
            if line["kind"] != "epoch":
                continue
            where = folder / "history.jsonl"
            epoch = number(line, "epoch", where)
            rows.append(
                {
                    "task": run.task,
                    **_model_columns(config, run.model),
                    "method": run.method,
                    "run": run.run,
                    "stage": run.stage,
                    "format": run.format,
                    "init_from": "/".join(run.init_from) if run.init_from else "",
                    "epoch": int(epoch),
                    "train_loss": number(line, "train_loss", where, required=False),
                    "validation_loss": number(line, "validation_loss", where, required=False),
                    "validation_perplexity": number(line, "validation_perplexity", where),
                    "wall_time_s": number(line, "wall_time_s", where, required=False),
                    "selected": int(epoch) == int(best_epoch),
                }
            )
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return frame.sort_values(["task", "params_b", "model", "run", "epoch"], kind="stable").reset_index(drop=True)


def sort_runs(frame: pd.DataFrame, known: tb_tasks.TaskSet) -> pd.DataFrame:
    """Tasks in the experiment's order, then model size, stage, method and run; metrics keep their order."""
    if frame.empty:
        return frame.reset_index(drop=True)
    keys = pd.DataFrame(
        {
            "task": frame["task"].map({t: i for i, t in enumerate(known.scored())}),
            "params_b": frame["params_b"],
            "stage": frame["stage"].map({s: i for i, s in enumerate(STAGES)}),
            "method": frame["method"].map({m: i for i, m in enumerate((tb_config.PROMPTED, *METHODS))}),
            "run": frame["run"],
            "position": range(len(frame)),
        }
    )
    order = keys.sort_values(list(keys.columns), kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def write(
    config: tb_config.Experiment, results: Path, metrics_out: Path, curves_out: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    metrics = collect_metrics(config, results)
    curves = collect_curves(config, results)
    for frame, out in ((metrics, metrics_out), (curves, curves_out)):
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_atomic(out, frame.to_csv(index=False, lineterminator="\n"))
    return metrics, curves


def _read_csv(path: Path, columns: list[str], writer: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing; run `tunebench {writer}` (or the workflow's aggregate rule) first.")
    try:
        frame = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path} is not a readable CSV file ({str(exc).splitlines()[0]}); regenerate it with `tunebench {writer}`."
        ) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks the columns {', '.join(missing)}; regenerate it with `tunebench {writer}`.")
    for column in TEXT_COLUMNS & set(frame.columns):
        frame[column] = frame[column].fillna("")
    for column in set(columns) - TEXT_COLUMNS - {"primary", "selected"}:
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = converted.isna() & frame[column].notna()
        if bad.any():
            row = int(bad.idxmax()) + 2
            raise DataError(
                f"{path} line {row}: column {column} holds {frame[column][bad].iloc[0]!r}, which is not a number; "
                f"regenerate the file with `tunebench {writer}`."
            )
        frame[column] = converted
    for column in {"primary", "selected"} & set(columns):
        frame[column] = frame[column].astype(str).str.lower().isin(("true", "1"))
    return frame


def read_metrics(path: Path) -> pd.DataFrame:
    return _read_csv(path, METRIC_COLUMNS, "aggregate")


def read_curves(path: Path) -> pd.DataFrame:
    return _read_csv(path, CURVE_COLUMNS, "aggregate")
