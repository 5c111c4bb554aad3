"""Settings hashes: what each stage's outputs depend on, as one short digest per job.

A digest covers the resolved settings of one job *and* the digests of the jobs it reads, so a change
anywhere upstream changes every downstream digest too. The workflow gives each rule its digest as a
param (Snakemake's params trigger re-runs exactly the jobs whose digest changed) and as an input: the
stamp file ``results/settings/<stage>/<job>/<digest>.json``, which a rule of its own writes and the
default target names. A changed digest names a stamp that does not exist yet, so its rule runs and
everything downstream is older than its input: a results/ directory copied without ``.snakemake/``
metadata still re-runs what a config edit affected when the default target is built. The commands
record the same digest in their outputs (manifest.json, config.json/run.json, generation.json, metrics.json),
and the results stage refuses to mix outputs made under settings other than the current config's.

Each stage's digest also holds a hash of the source files that stage runs (:mod:`tunebench.config.code`):
data, training, generation (decoder, model loading, prompting) and scoring (the task's scorer) each re-run
when their own code changes, and metrics.json records the hashes (with the version and ``git describe``)
so that the results stage refuses outputs made by other code too. A task's ``max_new_tokens`` and
``few_shot`` reach its generations only, a scorer's settings its scoring only, ``models.*.params_b`` the
results stage only.

Each function takes the :class:`tunebench.config.Experiment`: runs and tasks come from it. Nothing here imports
torch: the workflow computes every digest while it parses.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import config as tb_config
from ..tasks import Task
from . import code as tb_code

#: Key under which outputs record their digest.
KEY = "settings_hash"
STAMP_DIR = Path("results") / "settings"


def digest(settings: Any) -> str:
    """A 16-hex-digit sha256 of ``settings`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


#: Keys of a task's section that only generation reads.
GENERATION_KEYS = ("max_new_tokens", "few_shot")
#: Keys of a declared task's section that only its scorer reads. Neither kind reaches the data digest.
SCORER_KEYS = ("scorer", "pattern", "choices")


def _task_module(task: Task) -> str:
    return tb_code.module_path(type(task).__module__)


def _stage_code(paths: tuple[str, ...], task: Task) -> str:
    """The hash of a stage's own modules (``paths``) and the task's module."""
    return tb_code.source_hash((*paths, _task_module(task)))


def data_settings(config: tb_config.Experiment, task: str) -> dict:
    """What a data rule's splits depend on. The mirror's location is left out on purpose: it is a
    copy of the hub's files (the manifest records each file's sha256), and where it is mounted differs
    between machines that should share results."""
    options = copy.deepcopy(config["tasks"][task])
    for key in (*GENERATION_KEYS, *SCORER_KEYS):
        options.pop(key, None)
    return {
        "stage": "data",
        "task": task,
        "options": options,
        "seed": config["seed"],
        "max_bad_fraction": config["data"]["max_bad_fraction"],
        "overlap": config["data"]["overlap"],
        "code": data_code(config.tasks.get(task)),
    }


def data_code(task: Task) -> str:
    return _stage_code(tb_code.DATA, task)


def data_hash(config: tb_config.Experiment, task: str) -> str:
    return digest(data_settings(config, task))


def _model_entry(config: tb_config.Experiment, model: str) -> dict:
    entry = copy.deepcopy((config.get("models") or {}).get(model) or {})
    entry.pop("resources_size", None)  # chooses a row of resources only; outputs do not depend on it
    entry.pop("params_b", None)  # read by the cost table alone, which the results digest covers
    return entry


def train_settings(config: tb_config.Experiment, task: str, model: str, run: str) -> dict:
    """What a training run's checkpoint and records depend on, the first stage's digest included."""
    item = config.run(task, model, run, finetuned=True)
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
        "method_settings": config.method_settings(item),
        # The number of processes multiplies the global batch, so it shapes the result.
        "processes": config.resources("train", model, item.method)["processes"],
        "upstream": upstream,
        "code": train_code(config.tasks.get(task)),
    }


def train_code(task: Task) -> str:
    return _stage_code(tb_code.TRAIN, task)


def train_hash(config: tb_config.Experiment, task: str, model: str, run: str) -> str:
    return digest(train_settings(config, task, model, run))


def generate_settings(config: tb_config.Experiment, task: str, model: str, run: str) -> dict:
    """What a run's generations depend on: the model, the task's prompts and decoding settings (its own
    section but for its scorer's keys; the evaluation section's decoding keys), the seed, the digest of
    the data (baseline) or of the trained run (fine-tuned) and the code that prompts and decodes."""
    if tb_config.is_baseline(run):
        upstream = {"data": data_hash(config, task)}
    else:
        upstream = {"data": data_hash(config, task), "train": train_hash(config, task, model, run)}
    evaluation = config["evaluation"]
    section = {key: value for key, value in config["tasks"][task].items() if key not in SCORER_KEYS}
    size = ((config.get("models") or {}).get(model) or {}).get("size")
    return {
        "stage": "generate",
        "task": task,
        "model": _model_entry(config, model),
        "run": run,
        "task_settings": copy.deepcopy(section),
        "max_new_tokens": tb_config.max_new_tokens(config, task),
        "few_shot": tb_config.few_shot(config, task),
        "decoder": evaluation["decoder"],
        # Under the batch-invariant decoder the batch size changes no output; under generate it may.
        "batch_size": evaluation["batch_sizes"].get(size, evaluation["batch_size"]),
        "training_dtype": (config.get("training") or {}).get("dtype"),  # the inference dtype follows it
        "seed": config["seed"],
        "upstream": upstream,
        "code": generate_code(config.tasks.get(task)),
    }


def generate_code(task: Task) -> str:
    return _stage_code(tb_code.GENERATE, task)


def generate_hash(config: tb_config.Experiment, task: str, model: str, run: str) -> str:
    return digest(generate_settings(config, task, model, run))


def score_settings(config: tb_config.Experiment, task: str, model: str, run: str) -> dict:
    """What a run's verdicts and metrics depend on: its generations' digest, the scorer's own settings
    (a declared task's scorer keys, the evaluation keys that scorer reads), the bootstrap's, and the
    scorer's code."""
    evaluation = config["evaluation"]
    scorer = config.tasks.get(task)
    section = config["tasks"][task]
    return {
        "stage": "score",
        "task": task,
        "scorer_settings": {key: copy.deepcopy(section[key]) for key in SCORER_KEYS if key in section},
        "scorer_options": {key: evaluation[key] for key in scorer.scorer_options},
        "bootstrap_samples": evaluation["bootstrap_samples"],
        "confidence": evaluation["confidence"],
        "seed": config["seed"],
        "upstream": {"generate": generate_hash(config, task, model, run)},
        "code": score_code(scorer),
    }


def score_code(task: Task) -> str:
    return tb_code.source_hash((*tb_code.SCORE, *task.scorer_sources()))


def score_hash(config: tb_config.Experiment, task: str, model: str, run: str) -> str:
    return digest(score_settings(config, task, model, run))


def results_settings(config: tb_config.Experiment) -> dict:
    """What the tables, figures and paper depend on: the whole config except where jobs run
    (resources), where the mirror is mounted and which trackers get copies of the records. Their
    inputs' digests cover everything upstream."""
    settings = copy.deepcopy(dict(config))
    settings.pop("resources", None)
    settings.pop("tracking", None)
    if isinstance(settings.get("data"), dict):
        settings["data"].pop("mirror", None)
    return {"stage": "results", "config": settings}


def results_hash(config: tb_config.Experiment) -> str:
    return digest(results_settings(config))


def stamp_text(settings: Mapping[str, Any], name: str) -> str:
    """The stamp file's content: ``settings`` and their digest, which the file's ``name`` must repeat."""
    value = digest(settings)
    if name != value:
        raise ValueError(f"a settings stamp named {name} was asked for, but its settings give {value}")
    return json.dumps({KEY: value, "settings": settings}, indent=2, sort_keys=True, default=str)


def data_stamp(config: tb_config.Experiment, task: str) -> str:
    return str(STAMP_DIR / "data" / task / f"{data_hash(config, task)}.json")


def train_stamp(config: tb_config.Experiment, task: str, model: str, run: str) -> str:
    return str(STAMP_DIR / "train" / task / model / run / f"{train_hash(config, task, model, run)}.json")


def generate_stamp(config: tb_config.Experiment, task: str, model: str, run: str) -> str:
    return str(STAMP_DIR / "generate" / task / model / run / f"{generate_hash(config, task, model, run)}.json")


def score_stamp(config: tb_config.Experiment, task: str, model: str, run: str) -> str:
    return str(STAMP_DIR / "score" / task / model / run / f"{score_hash(config, task, model, run)}.json")


def results_stamp(config: tb_config.Experiment) -> str:
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


def check_code(doc: Mapping[str, Any], expected: Mapping[str, str], path: Path | str, remedy: str) -> None:
    """Refuse an output made by other code than the installed package's (its recorded source hashes), in one
    sentence: a table must not mix verdicts of an old scorer with those of a new one."""
    from ..util.errors import DataError

    recorded = doc.get("code") if isinstance(doc, Mapping) else None
    recorded = recorded if isinstance(recorded, Mapping) else {}
    changed = [stage for stage, value in expected.items() if recorded.get(stage) != value]
    if changed:
        made = (
            f"version {recorded.get('version')}, {recorded.get('git_describe') or 'no git checkout'}"
            if recorded
            else "no code record"
        )
        raise DataError(
            f"{path} was made by other {' and '.join(changed)} code than the installed tunebench's ({made}); "
            f"{remedy} so that every result comes from the same code."
        )
