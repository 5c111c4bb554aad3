"""The evaluation of a prompted baseline whose model is an OpenAI-compatible endpoint (``models.NAME.api``).

The same test rows, baseline messages, generation files and scoring as a local baseline
(:mod:`tunebench.stages.evaluate`); generation goes through :mod:`tunebench.stages.api`. A row whose request failed
keeps ``error`` in its generation, has ``null`` verdicts (unscorable, out of every metric's ``n``) and is counted in
``generation.json`` and ``metrics.json`` under ``api``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import config as tb_config
from ..tasks import data
from . import api
from . import evaluate as local
from . import score as scoring
from .generate import Generation


def is_api_model(config: Mapping[str, Any], model_name: str) -> bool:
    return bool((config["models"].get(model_name) or {}).get("api"))


def evaluate_any(
    config: tb_config.Experiment,
    task: str,
    model_name: str,
    run: str,
    *,
    api_cache: Path | None = None,
    **options: Any,
) -> dict:
    """One run of any model: an API model's baseline through its endpoint (answers cached in ``api_cache``),
    every other run in this process. ``options`` are :func:`tunebench.stages.evaluate.evaluate`'s keywords:
    ``data_dir``, ``out_dir`` and ``progress``, and for a local model ``train_dir`` and ``loaded``."""
    if not is_api_model(config, model_name):
        return local.evaluate(config, task, model_name, run, **options)
    spec = local.resolve(config, task, model_name, run)
    facts = evaluate(
        config,
        spec,
        data_dir=options["data_dir"],
        out_dir=options["out_dir"],
        cache_dir=api_cache,
        progress=options.get("progress"),
    )
    if not options.get("score", True):
        return facts
    return scoring.score_run(
        config,
        task,
        model_name,
        run,
        data_dir=options["data_dir"],
        gen_dir=options["out_dir"],
        out_dir=options["out_dir"],
    )


def evaluate(
    config: tb_config.Experiment,
    spec,
    *,
    data_dir: Path,
    out_dir: Path,
    cache_dir: Path | None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    task = config.tasks.get(spec.task)
    endpoint = api.Endpoint.from_config(config, spec.model)
    rows = local.test_rows(config, spec.task, data_dir)
    train = data.read_split(data_dir, "train")
    conversations = [task.baseline_messages(row, train, spec.variant, config["tasks"][spec.task]) for row in rows]
    limit = tb_config.max_new_tokens(config, spec.task)
    report = progress or (lambda message: None)
    report(
        f"{spec.task}/{spec.model}/{spec.run}: {len(rows)} rows through {endpoint.base_url} ({endpoint.model}), "
        f"at most {endpoint.max_concurrency} requests at once, up to {limit} new tokens"
    )
    began = time.perf_counter()
    answers, tally, server = api.complete(
        endpoint,
        conversations,
        max_tokens=limit,
        seed=config["seed"],
        cache_dir=cache_dir or api.DEFAULT_CACHE,
        progress=lambda done: report(f"answered {done}/{len(rows)}"),
    )
    wall = time.perf_counter() - began
    counts = tally.as_dict()
    latencies = [a.latency_s for a in answers if a.latency_s is not None]
    if counts["cache_hits"] and latencies:
        # Answers read from the cache took no time now: the run's time is the one their requests took when
        # sent, at the entry's concurrency, not the time of reading files.
        wall = sum(latencies) / min(endpoint.max_concurrency, len(latencies))
    timed = "recorded latencies" if counts["cache_hits"] else "measured"
    report(
        f"{counts['requests']} requests sent ({counts['retries']} retries), {counts['cache_hits']} answers from the "
        f"cache, {counts['failed_rows']} rows failed {counts['failures'] or ''}".rstrip()
    )
    records = [
        {
            **local.generation_record(row, Generation(a.text, a.prompt_tokens, a.generated_tokens, a.stopped)),
            "error": a.error,
            "latency_s": a.latency_s,
            "messages": list(messages),  # what was sent, rendered, for auditing a prediction
        }
        for row, a, messages in zip(rows, answers, conversations)
    ]
    generated = sum(a.generated_tokens for a in answers)
    facts = local.generation_facts(
        config,
        spec,
        wall_time_s=wall,
        tokens_per_s=generated / wall if wall else 0.0,
        batch_size=endpoint.max_concurrency,
        limit=limit,
        device=f"api:{endpoint.model}",
    )
    answered = [a for a in answers if a.error is None]
    facts["api"] = {
        "base_url": endpoint.base_url,
        "model": endpoint.model,
        "server": server,
        "request": api.request_params(endpoint, limit, config["seed"]),
        "wall_time_from": timed,
        "latency_s_mean": round(sum(latencies) / len(latencies), 4) if latencies else None,
        **counts,
        "input_price_per_mtok": endpoint.input_price_per_mtok,
        "output_price_per_mtok": endpoint.output_price_per_mtok,
        # Failed rows sent no billable tokens; the price per query is over the answered ones.
        "cost_per_1k_queries_usd": endpoint.cost_per_1k_queries(
            sum(a.prompt_tokens for a in answered) / max(1, len(answered)),
            sum(a.generated_tokens for a in answered) / max(1, len(answered)),
        ),
    }
    local.write_generations(out_dir, records, facts)
    return facts
