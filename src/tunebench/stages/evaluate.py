"""The evaluation stage: generate for one run on a task's test split and score every output.

A run is either a prompted baseline (``baseline`` or ``baseline-VARIANT``: the model's chat source,
prompted through its chat template with the task's baseline messages) or a fine-tuned run
(``METHOD[-TAG]``: the selected checkpoint, prompted in the run's format exactly as in training).
:func:`evaluate` writes ``predictions.jsonl`` (one line per test row, in test-split order) and then
``metrics.json`` (every metric with a seeded bootstrap interval). Rows the scorer cannot judge
(``None`` verdicts) stay in the predictions with their ``null`` verdicts and are counted as
``unscorable``; they are left out of that metric's ``n``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import config as tb_config
from .. import tasks
from ..config import digests as tb_digests
from ..tasks import data
from ..util import fileio, hardware, stats
from ..util.errors import ConfigError, DataError, UserError
from . import formats
from .generate import Generation, generate


def resolve(config: Mapping[str, Any], task: str, model: str, run: str) -> tb_config.Run:
    """The run named by (task, model, run) in the config's experiments, if it is evaluated."""
    found = tb_config.find_run(config, task, model, run)
    if found.is_baseline:
        if found.variant not in tasks.get(task).baseline_variants:
            known = ", ".join(tasks.get(task).baseline_variants)
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


def max_new_tokens(config: Mapping[str, Any], task: str) -> int:
    return config["evaluation"]["max_new_tokens"].get(task, tasks.get(task).max_new_tokens)


def prompt_texts(
    spec: tb_config.Run,
    rows: Sequence[Mapping[str, Any]],
    tokenizer,
    train: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any],
) -> list[str]:
    """The text each row's generation continues: baseline messages through the chat template, or the run's format."""
    task = tasks.get(spec.task)
    if not spec.is_baseline:
        return [formats.render_prompt(spec.format, task, row, tokenizer) for row in rows]
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"models.{spec.model}.chat has no chat template, which the prompted baseline needs; point it at a chat "
            "model."
        )
    texts = []
    train = list(train)  # one list for every row, so that tasks can rank their examples once
    for row in rows:
        messages = task.baseline_messages(row, train, spec.variant, options)
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return texts


def decoder(config: Mapping[str, Any]) -> str:
    """The decoding path of ``evaluation.decoder``: ``auto`` is transformers' generate on a GPU, else
    batch-invariant."""
    import torch

    chosen = config["evaluation"]["decoder"]
    if chosen == "auto":
        return "generate" if torch.cuda.is_available() else "batch_invariant"
    return chosen


def eval_batch_size(config: Mapping[str, Any], model_name: str) -> int:
    """``evaluation.batch_sizes`` of the model's size label, else ``evaluation.batch_size``."""
    evaluation = config["evaluation"]
    size = config["models"][model_name]["size"]
    return evaluation["batch_sizes"].get(size, evaluation["batch_size"])


def devices(model) -> str:
    """Where the model runs: one device, or the devices accelerate spread it over (``cuda:0,cuda:1``)."""
    placed = getattr(model, "hf_device_map", None)
    if not placed:
        return str(next(model.parameters()).device)
    names = [f"cuda:{d}" if isinstance(d, int) else str(d) for d in placed.values()]
    return ",".join(dict.fromkeys(names))


def _context_length(model) -> int | None:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner.config, "max_position_embeddings", None)


def score_rows(
    spec: tb_config.Run,
    rows: Sequence[Mapping[str, Any]],
    generations: Sequence[Generation],
    options: Mapping[str, Any],
) -> list[dict]:
    """One predictions.jsonl record per row: the output, what the scorer extracted and its verdicts."""
    task = tasks.get(spec.task)
    records = []
    for row, gen in zip(rows, generations):
        verdict = task.score(gen.text, row, **options)
        records.append(
            {
                "id": row["id"],
                "prompt": row["prompt"],
                "output": gen.text,
                "extracted": task.extract(gen.text),
                "answer": row["answer"],
                "verdict": {metric: verdict[metric] for metric in task.metrics},
                "prompt_tokens": gen.prompt_tokens,
                "generated_tokens": gen.generated_tokens,
                "stopped": gen.stopped,
            }
        )
    return records


def summary(
    spec: tb_config.Run,
    records: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
    *,
    wall_time_s: float,
    tokens_per_s: float,
    batch_size: int,
    limit: int,
    device: str,
) -> dict:
    """The metrics.json document of a run."""
    task = tasks.get(spec.task)
    evaluation = config["evaluation"]
    verdicts = [record["verdict"] for record in records]
    n = len(records)
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
        "unscorable_reasons": dict(Counter(v["unscorable"] for v in verdicts if "unscorable" in v)),
        "metrics": stats.summarize(
            verdicts,
            task.metrics,
            samples=evaluation["bootstrap_samples"],
            confidence=evaluation["confidence"],
            seed=config["seed"],
        ),
        "prompt_tokens_mean": sum(r["prompt_tokens"] for r in records) / n,
        "generated_tokens_mean": sum(r["generated_tokens"] for r in records) / n,
        "wall_time_s": round(wall_time_s, 3),
        "tokens_per_s": round(tokens_per_s, 2),
        "batch_size": batch_size,
        "max_new_tokens": limit,
        "truncated": sum(r["stopped"] == "length" for r in records),
        "device": device,
        tb_digests.KEY: tb_digests.eval_hash(config, spec.task, spec.model, spec.run),
    }


def load_run_model(config: Mapping[str, Any], spec: tb_config.Run, train_dir: Path | None):
    """``(model, tokenizer)`` of the run: the chat source for a baseline, the selected checkpoint otherwise."""
    from . import models

    if spec.is_baseline:
        return models.load_for_inference(config, spec.model, role="chat")
    if train_dir is None:
        raise UserError(f"{spec.task}/{spec.model}/{spec.run} is a fine-tuned run; pass its training directory.")
    best_path = Path(train_dir) / "best.json"
    if not best_path.is_file():
        raise UserError(f"{best_path} does not exist; train the run first (tunebench train --run {spec.run}).")
    try:
        best = json.loads(best_path.read_text())
        checkpoint = Path(train_dir) / best["checkpoint"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(
            f"{best_path} is not a best.json written by tunebench train; delete it and train the run again."
        ) from None
    return models.load_for_inference(config, spec.model, role="base", checkpoint_dir=checkpoint)


def evaluate(
    config: Mapping[str, Any],
    task: str,
    model_name: str,
    run: str,
    *,
    data_dir: Path,
    out_dir: Path,
    train_dir: Path | None = None,
    loaded: tuple[Any, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Generate and score one run; write predictions.jsonl and metrics.json into ``out_dir``; return the metrics.

    ``loaded`` is an already loaded ``(model, tokenizer)`` to use instead of loading the run's model.
    An API model's baseline goes through :func:`tunebench.stages.evaluate_api.evaluate_any` instead.
    """
    if task not in tasks.scored():
        raise ConfigError(f"task {task!r} has no scorer; scored tasks are {', '.join(tasks.scored())}.")
    spec = resolve(config, task, model_name, run)
    if loaded is None:
        gpus = tb_config.resources(config, "evaluate", model_name)["gpu"]
        hardware.require_gpus(gpus, tb_config.resources_key(config, "evaluate", model_name))
    options = config["evaluation"]
    rows = test_rows(config, task, data_dir)
    train = data.read_split(data_dir, "train") if spec.is_baseline else []
    model, tokenizer = loaded if loaded is not None else load_run_model(config, spec, train_dir)

    texts = prompt_texts(spec, rows, tokenizer, train, options)
    prompts = [formats.encode_prompt(tokenizer, text) for text in texts]
    limit = max_new_tokens(config, task)
    context = _context_length(model)
    too_long = sum(len(p) + limit > context for p in prompts) if context else 0
    if too_long:
        raise ConfigError(
            f"{too_long} of {len(prompts)} {task} prompts plus evaluation.max_new_tokens ({limit}) exceed the model's "
            f"context of {context} tokens; lower evaluation.max_new_tokens or evaluation.few_shot."
        )
    batch_size = eval_batch_size(config, model_name)
    path = decoder(config)
    report = progress or (lambda message: None)
    report(
        f"{task}/{model_name}/{run}: {len(rows)} rows, batch size {batch_size}, up to {limit} new tokens, decoder "
        f"{path}"
    )
    generations, throughput = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=limit,
        batch_size=batch_size,
        stop_strings=formats.stop_strings(spec.format, tokenizer),
        progress=lambda done: report(f"generated {done}/{len(rows)}"),
        decoder=path,
    )
    report(
        f"generated {throughput.generated_tokens} tokens in {throughput.wall_time_s:.1f} s, weights in "
        f"{str(next(model.parameters()).dtype).removeprefix('torch.')} "
        f"({throughput.prompt_tokens_computed} of {throughput.prompt_tokens} prompt tokens computed, the rest shared)"
    )
    began = time.perf_counter()
    records = score_rows(spec, rows, generations, options)
    report(f"scored {len(records)} rows in {time.perf_counter() - began:.1f} s")
    device = devices(model)
    metrics = summary(
        spec,
        records,
        config,
        wall_time_s=throughput.wall_time_s,
        tokens_per_s=throughput.tokens_per_s,
        batch_size=throughput.batch_size,
        limit=limit,
        device=device,
    )
    metrics["hardware"] = hardware.describe_run(model)
    metrics["hardware"]["weights_dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_jsonl(out_dir / "predictions.jsonl", records)
    # metrics.json last: it is the file downstream rules wait for.
    fileio.write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
