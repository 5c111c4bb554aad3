"""Settings hashes: what each stage's outputs depend on, as one short digest per job.

A digest covers the resolved settings of one job *and* the digests of the jobs it reads, so a change
anywhere upstream changes every downstream digest too. The workflow gives each rule its digest as a
param (Snakemake's params trigger re-runs exactly the jobs whose digest changed) and as an input: the
stamp file ``results/settings/<stage>/<job>/<digest>.json``, which a rule of its own writes and the
default target names. A changed digest names a stamp that does not exist yet, so its rule runs and
everything downstream is older than its input: a results/ directory copied without ``.snakemake/``
metadata still re-runs what a config edit affected when the default target is built. The commands
record the same digest in their outputs (manifest.json, config.json/run.json, metrics.json), and the
results stage refuses to mix outputs made under settings other than the current config's.

Nothing here imports torch: the workflow computes every digest while it parses.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import config as tb_config

#: Key under which outputs record their digest.
KEY = "settings_hash"
STAMP_DIR = Path("results") / "settings"


def digest(settings: Any) -> str:
    """A 16-hex-digit sha256 of ``settings`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def data_settings(config: Mapping[str, Any], task: str) -> dict:
    """What a data rule's splits depend on. The mirror's location is left out on purpose: it is a
    copy of the hub's files (the manifest records each file's sha256), and where it is mounted differs
    between machines that should share results."""
    return {
        "stage": "data",
        "task": task,
        "options": copy.deepcopy(config["tasks"][task]),
        "seed": config["seed"],
        "max_bad_fraction": config["data"]["max_bad_fraction"],
        "overlap": config["data"]["overlap"],
    }


def data_hash(config: Mapping[str, Any], task: str) -> str:
    return digest(data_settings(config, task))


def _model_entry(config: Mapping[str, Any], model: str) -> dict:
    entry = copy.deepcopy((config.get("models") or {}).get(model) or {})
    entry.pop("resources_size", None)  # chooses a row of resources only; outputs do not depend on it
    return entry


def train_settings(config: Mapping[str, Any], task: str, model: str, run: str) -> dict:
    """What a training run's checkpoint and records depend on, the first stage's digest included."""
    item = tb_config.find_finetune(config, task, model, run)
    training = dict(item.training)
    upstream = {"data": data_hash(config, task)}
    if item.init_from:
        upstream["init"] = train_hash(config, item.init_from[0], model, item.init_from[1])
    return {
        "stage": "train",
        "task": task,
        "model": _model_entry(config, model),
        "method": item.method,
        "run": run,
        "format": item.format,
        "training": training,
        "method_settings": tb_config.method_settings(config, item),
        # The number of processes multiplies the global batch, so it shapes the result.
        "processes": tb_config.resources(config, "train", model, item.method)["processes"],
        "upstream": upstream,
    }


def train_hash(config: Mapping[str, Any], task: str, model: str, run: str) -> str:
    return digest(train_settings(config, task, model, run))


def eval_settings(config: Mapping[str, Any], task: str, model: str, run: str) -> dict:
    """What an evaluation's predictions and metrics depend on: the evaluation section, the model,
    the seed and the digest of the data (baseline) or of the trained run (fine-tuned)."""
    if tb_config.is_baseline(run):
        upstream = {"data": data_hash(config, task)}
    else:
        upstream = {"data": data_hash(config, task), "train": train_hash(config, task, model, run)}
    return {
        "stage": "evaluate",
        "task": task,
        "model": _model_entry(config, model),
        "run": run,
        "evaluation": copy.deepcopy(config.get("evaluation") or {}),
        "training_dtype": (config.get("training") or {}).get("dtype"),  # the inference dtype follows it
        "seed": config["seed"],
        "upstream": upstream,
    }


def eval_hash(config: Mapping[str, Any], task: str, model: str, run: str) -> str:
    return digest(eval_settings(config, task, model, run))


def results_settings(config: Mapping[str, Any]) -> dict:
    """What the tables, figures and paper depend on: the whole config except where jobs run
    (resources), where the mirror is mounted and which trackers get copies of the records. Their
    inputs' digests cover everything upstream."""
    settings = copy.deepcopy(dict(config))
    settings.pop("resources", None)
    settings.pop("tracking", None)
    if isinstance(settings.get("data"), dict):
        settings["data"].pop("mirror", None)
    return {"stage": "results", "config": settings}


def results_hash(config: Mapping[str, Any]) -> str:
    return digest(results_settings(config))


def stamp_text(settings: Mapping[str, Any], name: str) -> str:
    """The stamp file's content: ``settings`` and their digest, which the file's ``name`` must repeat."""
    value = digest(settings)
    if name != value:
        raise ValueError(f"a settings stamp named {name} was asked for, but its settings give {value}")
    return json.dumps({KEY: value, "settings": settings}, indent=2, sort_keys=True, default=str)


def data_stamp(config: Mapping[str, Any], task: str) -> str:
    return str(STAMP_DIR / "data" / task / f"{data_hash(config, task)}.json")


def train_stamp(config: Mapping[str, Any], task: str, model: str, run: str) -> str:
    return str(STAMP_DIR / "train" / task / model / run / f"{train_hash(config, task, model, run)}.json")


def eval_stamp(config: Mapping[str, Any], task: str, model: str, run: str) -> str:
    return str(STAMP_DIR / "eval" / task / model / run / f"{eval_hash(config, task, model, run)}.json")


def results_stamp(config: Mapping[str, Any]) -> str:
    return str(STAMP_DIR / "results" / f"{results_hash(config)}.json")


def check_recorded(doc: Mapping[str, Any], expected: str, path: Path | str, remedy: str) -> None:
    """Refuse an output whose recorded digest is not the current config's, in one sentence."""
    from ..util.errors import DataError

    found = doc.get(KEY) if isinstance(doc, Mapping) else None
    if found != expected:
        made = f"under settings {found}" if found else "without a settings record"
        raise DataError(
            f"{path} was made {made}, but the current config gives {expected}; "
            f"{remedy} so that every result comes from the same settings."
        )
