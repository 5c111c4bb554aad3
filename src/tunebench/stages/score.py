"""The scoring stage: verdicts and metrics of one run from the generations the evaluation wrote.

``tunebench evaluate`` writes ``generations.jsonl`` (one line per test row, in test-split order: the raw
output and its token counts) and ``generation.json`` (how they were made: throughput, device, the endpoint
of an API model, the generation digest). :func:`score_run` reads both with the test split and writes
``predictions.jsonl`` (each row's output, what the scorer extracted and its verdicts) and then
``metrics.json`` (every metric with a seeded bootstrap interval). Rows the scorer cannot judge (``None``
verdicts) stay in the predictions and are counted as ``unscorable``; a row whose API request failed is
unscorable too. Scoring takes seconds and imports no model code, so a scorer change re-scores without
generating again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import config as tb_config
from ..config import code as tb_code
from ..config import digests as tb_digests
from ..tasks import Task, data
from ..util import fileio, stats
from ..util.errors import ConfigError, DataError

GENERATIONS = "generations.jsonl"
FACTS = "generation.json"
#: What a generation record carries into the prediction beside its output, where the generation has it.
_CARRIED = ("prompt_tokens", "generated_tokens", "stopped", "error", "latency_s", "messages")


def resolve(config: tb_config.Experiment, task: str, model: str, run: str) -> tb_config.Run:
    """The run named by (task, model, run) in the config's experiments, if it is evaluated."""
    scored = config.tasks.scored()
    if task not in scored:
        raise ConfigError(f"task {task!r} has no scorer; scored tasks are {', '.join(scored)}.")
    found = config.run(task, model, run)
    if found.is_baseline:
        variants = config.tasks.get(task).baseline_variants
        if found.variant not in variants:
            known = ", ".join(variants)
            raise ConfigError(
                f"experiments.baselines asks for {task} variant {found.variant!r}, which the task does not offer "
                f"({known})."
            )
    elif not found.evaluate:
        raise ConfigError(
            f"experiments.finetune sets evaluate: false for {task}/{model}/{run}, so it has nothing to evaluate."
        )
    return found


def test_rows(config: Mapping[str, Any], task: str, data_dir: Path) -> list[dict]:
    """The test split, cut to ``tasks.<task>.limit.test`` when the data stage wrote more rows.

    The cut draws the same rows the data stage would have drawn, so a test split prepared without a
    limit and one prepared with it give the same subset.
    """
    rows = data.read_split(data_dir, "test")
    limit = (config["tasks"][task].get("limit") or {}).get("test")  # an absent limit keeps every row
    rows = data.limit_rows(rows, limit, config["seed"], task, "test")
    if not rows:
        raise DataError(f"{Path(data_dir) / 'test.jsonl'} has no rows; rebuild it with tunebench data {task}.")
    return rows


def scorer_options(config: tb_config.Experiment, task: str) -> dict:
    """The ``evaluation`` keys the task's scorer reads, and only those."""
    return {key: config["evaluation"][key] for key in config.tasks.get(task).scorer_options}


def predictions(
    task: Task, rows: Sequence[Mapping[str, Any]], generations: Sequence[Mapping[str, Any]], options: Mapping
) -> list[dict]:
    """One predictions.jsonl record per row: the output, what the scorer extracted and its verdicts."""
    records = []
    for row, generated in zip(rows, generations, strict=True):
        text = generated["output"]
        if generated.get("error") is not None:
            # Unscorable, not wrong: the endpoint gave no answer to judge.
            verdict, extracted = dict.fromkeys(task.metrics), None
        else:
            verdict, extracted = task.score(text, row, **options), task.extract(text)
        record = {
            "id": row["id"],
            "prompt": row["prompt"],
            "output": text,
            "extracted": extracted,
            "answer": row["answer"],
            "verdict": {metric: verdict[metric] for metric in task.metrics},
        }
        if "unscorable" in verdict:
            record["unscorable"] = verdict["unscorable"]
        record.update({key: generated[key] for key in _CARRIED if key in generated})
        records.append(record)
    return records


def summary(
    spec: tb_config.Run, records: Sequence[Mapping[str, Any]], config: tb_config.Experiment, facts: Mapping[str, Any]
) -> dict:
    """The metrics.json document of a run: the scores, and the generation's facts it was scored from."""
    task = config.tasks.get(spec.task)
    evaluation = config["evaluation"]
    verdicts = [record["verdict"] for record in records]
    n = len(records)
    generated = {key: facts.get(key) for key in ("wall_time_s", "tokens_per_s", "batch_size", "device", "hardware")}
    return {
        "task": spec.task,
        "model": spec.model,
        "run": spec.run,
        "method": spec.method,
        "stage": spec.stage,
        "format": spec.format,
        "variant": spec.variant,
        "n": n,
        "unscorable": sum(any(v is None for v in verdict.values()) for verdict in verdicts),
        # Why, where the scorer says (a declared pattern past its time limit).
        "unscorable_reasons": dict(Counter(r["unscorable"] for r in records if "unscorable" in r)),
        "metrics": stats.summarize(
            verdicts,
            task.metrics,
            samples=evaluation["bootstrap_samples"],
            confidence=evaluation["confidence"],
            seed=config["seed"],
        ),
        "prompt_tokens_mean": sum(r["prompt_tokens"] for r in records) / n,
        "generated_tokens_mean": sum(r["generated_tokens"] for r in records) / n,
        **generated,
        "max_new_tokens": facts["max_new_tokens"],
        "truncated": sum(r["stopped"] == "length" for r in records),
        **({"api": facts["api"]} if "api" in facts else {}),
        tb_digests.KEY: tb_digests.score_hash(config, spec.task, spec.model, spec.run),
        "generation_hash": facts[tb_digests.KEY],
        "code": code_record(task),
    }


def code_record(task: Task) -> dict:
    """Which code made a run's metrics: the generation's and the scorer's source hashes, version, git describe."""
    return tb_code.provenance(generate=tb_digests.generate_code(task), score=tb_digests.score_code(task))


def read_generations(gen_dir: Path, rows: Sequence[Mapping[str, Any]], expected: str) -> tuple[dict, list[dict]]:
    """``generation.json`` and the lines of ``generations.jsonl``, checked against the test rows and the
    current generation digest (a :class:`DataError` naming the file otherwise)."""
    gen_dir = Path(gen_dir)
    again = "run tunebench evaluate for this run again (snakemake does so when its settings changed)"
    facts_path, lines_path = gen_dir / FACTS, gen_dir / GENERATIONS
    try:
        facts = json.loads(facts_path.read_text(encoding="utf-8"))
        generations = [json.loads(line) for line in lines_path.read_text(encoding="utf-8").splitlines() if line]
    except FileNotFoundError as missing:
        raise DataError(f"{missing.filename} does not exist; {again}.") from None
    except (ValueError, UnicodeDecodeError):
        raise DataError(f"{facts_path} or {lines_path} is not what tunebench evaluate writes; {again}.") from None
    tb_digests.check_recorded(facts, expected, facts_path, again)
    if [g.get("id") for g in generations] != [row["id"] for row in rows]:
        raise DataError(f"{lines_path} does not hold one line per test row in test-split order; {again}.")
    return facts, generations


def score_run(
    config: tb_config.Experiment, task: str, model: str, run: str, *, data_dir: Path, gen_dir: Path, out_dir: Path
) -> dict:
    """Score one run's generations; write predictions.jsonl and metrics.json into ``out_dir``; return the metrics."""
    spec = resolve(config, task, model, run)
    rows = test_rows(config, task, data_dir)
    facts, generations = read_generations(gen_dir, rows, tb_digests.generate_hash(config, task, model, run))
    records = predictions(config.tasks.get(task), rows, generations, scorer_options(config, task))
    metrics = summary(spec, records, config, facts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_jsonl(out_dir / "predictions.jsonl", records)
    # metrics.json last: it is the file downstream rules wait for.
    fileio.write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
