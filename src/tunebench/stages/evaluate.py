"""The evaluation stage: generate for one run on a task's test split, then score the outputs.

A run is either a prompted baseline (``baseline`` or ``baseline-VARIANT``: the model's chat source,
prompted through its chat template with the task's baseline messages) or a fine-tuned run
(``METHOD[-TAG]``: the selected checkpoint, prompted in the run's format exactly as in training).
:func:`evaluate` writes ``generations.jsonl`` and ``generation.json`` (the expensive half), then scores
them with :func:`tunebench.stages.score.score_run` into ``predictions.jsonl`` and ``metrics.json``
unless asked to generate only; the workflow runs the two halves as separate jobs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import config as tb_config
from ..config import code as tb_code
from ..config import digests as tb_digests
from ..tasks import Task, data
from ..util import fileio, hardware
from ..util.errors import ConfigError, DataError, UserError
from . import formats
from . import score as scoring
from .generate import Generation, generate
from .score import resolve, test_rows

__all__ = ["evaluate", "resolve", "test_rows"]


def prompt_texts(
    task: Task,
    spec: tb_config.Run,
    rows: Sequence[Mapping[str, Any]],
    tokenizer,
    train: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any],
) -> list[str]:
    """The text each row's generation continues: baseline messages through the chat template, or the run's format."""
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
    config: tb_config.Experiment,
    task: str,
    model_name: str,
    run: str,
    *,
    data_dir: Path,
    out_dir: Path,
    train_dir: Path | None = None,
    loaded: tuple[Any, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    score: bool = True,
) -> dict:
    """Generate for one run into ``out_dir`` (generations.jsonl, generation.json), then score them there
    (predictions.jsonl, metrics.json) unless ``score`` is false; return the metrics, or the generation's facts.

    ``loaded`` is an already loaded ``(model, tokenizer)`` to use instead of loading the run's model.
    An API model's baseline goes through :func:`tunebench.stages.evaluate_api.evaluate_any` instead.
    """
    spec = resolve(config, task, model_name, run)
    if loaded is None:
        gpus = config.resources("evaluate", model_name)["gpu"]
        hardware.require_gpus(gpus, config.resources_key("evaluate", model_name))
    rows = test_rows(config, task, data_dir)
    train = data.read_split(data_dir, "train") if spec.is_baseline else []
    model, tokenizer = loaded if loaded is not None else load_run_model(config, spec, train_dir)

    texts = prompt_texts(config.tasks.get(task), spec, rows, tokenizer, train, config["tasks"][task])
    prompts = [formats.encode_prompt(tokenizer, text) for text in texts]
    limit = tb_config.max_new_tokens(config, task)
    context = _context_length(model)
    too_long = sum(len(p) + limit > context for p in prompts) if context else 0
    if too_long:
        raise ConfigError(
            f"{too_long} of {len(prompts)} {task} prompts plus tasks.{task}.max_new_tokens ({limit}) exceed the "
            f"model's context of {context} tokens; lower tasks.{task}.max_new_tokens or tasks.{task}.few_shot."
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
    weights = str(next(model.parameters()).dtype).removeprefix("torch.")
    report(
        f"generated {throughput.generated_tokens} tokens in {throughput.wall_time_s:.1f} s, weights in {weights} "
        f"({throughput.prompt_tokens_computed} of {throughput.prompt_tokens} prompt tokens computed, the rest shared)"
    )
    facts = generation_facts(
        config,
        spec,
        wall_time_s=throughput.wall_time_s,
        tokens_per_s=throughput.tokens_per_s,
        batch_size=throughput.batch_size,
        limit=limit,
        device=devices(model),
    )
    facts["hardware"] = hardware.describe_run(model)
    facts["hardware"]["weights_dtype"] = weights
    records = [generation_record(row, gen) for row, gen in zip(rows, generations)]
    write_generations(out_dir, records, facts)
    if not score:
        return facts
    began = time.perf_counter()
    metrics = scoring.score_run(config, task, model_name, run, data_dir=data_dir, gen_dir=out_dir, out_dir=out_dir)
    report(f"scored {len(rows)} rows in {time.perf_counter() - began:.1f} s")
    return metrics


def generation_record(row: Mapping[str, Any], gen: Generation) -> dict:
    """One generations.jsonl line: the row's id, the raw output and its token counts."""
    return {
        "id": row["id"],
        "output": gen.text,
        "prompt_tokens": gen.prompt_tokens,
        "generated_tokens": gen.generated_tokens,
        "stopped": gen.stopped,
    }


def generation_facts(
    config: Mapping[str, Any],
    spec: tb_config.Run,
    *,
    wall_time_s: float,
    tokens_per_s: float,
    batch_size: int,
    limit: int,
    device: str,
) -> dict:
    """The generation.json document: which run, how fast, where, under which settings and code."""
    return {
        "task": spec.task,
        "model": spec.model,
        "run": spec.run,
        "wall_time_s": round(wall_time_s, 3),
        "tokens_per_s": round(tokens_per_s, 2),
        "batch_size": batch_size,
        "max_new_tokens": limit,
        "device": device,
        "hardware": None,
        tb_digests.KEY: tb_digests.generate_hash(config, spec.task, spec.model, spec.run),
        "code": tb_code.provenance(generate=tb_digests.generate_code(config.tasks.get(spec.task))),
    }


def write_generations(out_dir: Path, records: Sequence[Mapping[str, Any]], facts: Mapping[str, Any]) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_jsonl(out_dir / scoring.GENERATIONS, records)
    # generation.json last: it is the file the scoring job waits for.
    fileio.write_atomic(out_dir / scoring.FACTS, json.dumps(facts, indent=2) + "\n")
