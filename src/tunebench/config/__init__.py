"""Experiment configuration: loading, schema validation, cross-key checks and run resolution.

The JSON schema in ``workflow/schemas/config.schema.yaml`` is the single description of every key;
the workflow validates with ``snakemake.utils.validate`` and the CLI with :func:`load`, both against
that file. What a schema cannot express (a model named in an experiment must exist, a LoRA preset
must be defined, ...) is checked by :func:`check`. Every failure is a :class:`ConfigError` whose
message is one sentence naming the key. Validation returns the resolved :class:`Experiment`
(:mod:`tunebench.config.experiment`): the run matrix, the config's tasks, method settings and resources.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .. import tasks
from ..stages.train import methods
from ..util.errors import ConfigError
from ..util.staging import MIRROR_ENV
from .experiment import (
    BASELINE,
    BASELINE_FORMAT,
    PROMPTED,
    Experiment,
    Run,
    entry_training,
    is_baseline,
    merge,
    run_name,
    seed_run_name,
)

__all__ = [
    "ACCELERATE_DIR",
    "BASELINE",
    "BASELINE_FORMAT",
    "MIRROR_ENV",
    "MOVED_TO_TASKS",
    "PROMPTED",
    "ROOT",
    "SCHEMA_PATH",
    "Experiment",
    "Run",
    "check",
    "data_mirror",
    "defaults",
    "entry_training",
    "few_shot",
    "is_baseline",
    "load",
    "max_new_tokens",
    "read_yaml",
    "run_name",
    "seed_run_name",
    "validate",
]

ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
ACCELERATE_DIR = ROOT / "config" / "accelerate"


def _schema() -> dict:
    """The schema file with each method's own section (from its module) in place of the open one."""
    with open(SCHEMA_PATH) as handle:
        schema = yaml.safe_load(handle)
    schema["properties"]["tasks"]["properties"] = {name: _task_schema(tasks.get(name)) for name in tasks.built_in()}
    section = schema["properties"]["methods"]
    section["properties"] = {name: copy.deepcopy(method.schema) for name, method in methods.REGISTRY.items()}
    section["additionalProperties"] = False
    finetune = schema["properties"]["experiments"]["properties"]["finetune"]["items"]
    finetune["properties"]["methods"]["items"]["enum"] = list(methods.REGISTRY)
    return schema


def _task_schema(task) -> dict:
    """A built-in task's section, with the generation limit every task has (its module's value by default)."""
    section = copy.deepcopy(task.schema)
    section["properties"]["max_new_tokens"] = {
        "type": "integer",
        "minimum": 1,
        "default": task.max_new_tokens,
        "description": "Generation limit of this task's evaluations (tokens).",
    }
    return section


#: Keys that moved into each task's own section: ``evaluation.KEY`` is refused, naming ``tasks.<task>.KEY``.
MOVED_TO_TASKS = ("max_new_tokens", "few_shot")


def _refuse_moved(config: Mapping) -> None:
    evaluation = config.get("evaluation")
    for key in MOVED_TO_TASKS:
        if isinstance(evaluation, Mapping) and key in evaluation:
            raise ConfigError(
                f"evaluation.{key} is no longer read; set tasks.<task>.{key} for each task instead (e.g. "
                f"tasks.gsm8k.{key})."
            )


def max_new_tokens(config: Experiment, task: str) -> int:
    """The generation limit of ``task``'s evaluations: ``tasks.<task>.max_new_tokens``, else its module's."""
    return (config["tasks"].get(task) or {}).get("max_new_tokens", config.tasks.get(task).max_new_tokens)


def few_shot(config: Mapping, task: str) -> int | None:
    """Worked examples in ``task``'s baseline prompt (``tasks.<task>.few_shot``); None where it shows none."""
    return (config["tasks"].get(task) or {}).get("few_shot")


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """One sentence for a schema violation, naming the offending key."""
    key = _key_path(error)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        where = key if error.absolute_path else "the top level"
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"unknown key {'/'.join(extra)!s} under {where}; allowed keys are: {allowed}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        prefix = f"{key}." if error.absolute_path else ""
        return f"required key {prefix}{missing} is missing"
    if error.validator == "enum":
        return f"{key} is {error.instance!r} but must be one of {', '.join(map(str, error.validator_value))}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{key} is {error.instance!r} but must be of type {expected}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {
            "minimum": "at least",
            "exclusiveMinimum": "greater than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }[error.validator]
        return f"{key} is {error.instance!r} but must be {relation} {error.validator_value}"
    return f"{key}: {error.message}"


class _Override(dict):
    """A partial section that overrides another (an experiment's training keys): never default-filled,
    or the defaults would replace the top-level settings it is merged over."""


def _with_defaults(validator_class):
    """A validator that fills in schema defaults while validating (as Snakemake's validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict) and not isinstance(instance, _Override):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def validate(config: dict) -> Experiment:
    """Validate ``config`` in place against the schema (filling defaults), check cross-key rules and return
    the resolved :class:`Experiment` (the mapping stays a dict: Snakemake's ``config`` is one)."""
    _refuse_moved(config)
    schema = _schema()
    given = config.get("lora_presets")
    if isinstance(given, dict):  # a config's presets join the built-in ones (its own win on a shared name)
        config["lora_presets"] = {**copy.deepcopy(schema["properties"]["lora_presets"]["default"]), **given}
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    entries = (config.get("experiments") or {}).get("finetune") if isinstance(config.get("experiments"), dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("training"), dict):
            entry["training"] = _Override(entry["training"])
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("training"), _Override):
            entry["training"] = dict(entry["training"])
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"invalid configuration: {_describe(best)}.")
    _label_sizes(config)
    check(config)
    return Experiment.of(config)


def _label_sizes(config: dict) -> None:
    """A size label for each model that states none: API for an endpoint (its size is unknown), else one
    from params_b (0.135 → 135M, 7 → 7B), else the model's name."""
    for name, model in config["models"].items():
        if model["size"]:
            continue
        if model.get("api"):
            model["size"] = "API"
        elif model.get("params_b"):
            billions = model["params_b"]
            model["size"] = f"{billions:g}B" if billions >= 1 else f"{billions * 1000:g}M"
        else:
            model["size"] = name


def defaults() -> Experiment:
    """Every key at its schema default, as an experiment without runs or declared tasks: the settings a command
    uses when it is given no config file."""
    config: dict = {}
    validator = _with_defaults(jsonschema.Draft202012Validator)(_schema())
    for _ in validator.iter_errors(config):  # filling happens while validating; only `models` is missing
        pass
    return Experiment.of(config)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping repeating a key is an error: the plain loader keeps
    the last value silently, so a duplicated section would quietly replace the settings above it."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} repeats the one on line {seen[key]}", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """One YAML file's content; a syntax error or a repeated key is a ConfigError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; save it as UTF-8.") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}{where} is not valid YAML: {problem}.") from None


def load(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Experiment:
    """Read one or more YAML files (later ones override earlier ones), validate, return the experiment."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    config: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"config file {path} does not exist; pass the path of a YAML file such as config/demo.yaml."
            )
        loaded = read_yaml(path)
        if loaded is None:
            raise ConfigError(f"config file {path} is empty; give it the keys to set, or leave it out.")
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys at the top level.")
        config = merge(config, loaded)
    return validate(config)


def check(config: Mapping) -> None:
    """Rules across keys that the schema cannot state."""
    models = config["models"]
    for name, model in models.items():
        if not model.get("base") and not model.get("api"):
            raise ConfigError(
                f"models.{name} needs base (weights to load) or api (an OpenAI-compatible endpoint); give one."
            )
        if model.get("api") and (model.get("base") or model.get("chat")):
            raise ConfigError(
                f"models.{name} gives api together with base or chat; an endpoint model loads no weights, "
                "so remove them."
            )
        for role in ("base", "chat"):
            source = model.get(role)
            if source is None:
                continue
            kinds = [k for k in ("hub", "local", "gguf_package", "random_llama") if source.get(k) not in (None, "")]
            if len(kinds) != 1:
                raise ConfigError(
                    f"models.{name}.{role} must name exactly one of hub, local, gguf_package or random_llama (found "
                    f"{', '.join(kinds) or 'none'})."
                )
            if kinds == ["random_llama"] and not any(
                (source.get("tokenizer") or {}).get(k) for k in ("hub", "local", "gguf_package")
            ):
                raise ConfigError(
                    f"models.{name}.{role}.tokenizer must name a tokenizer source for a random_llama model."
                )
    container = config.get("container")
    if container is not None and not re.fullmatch(r"docker://\S+:[^\s/:]+|\S+\.sif", container):
        # apptainer pulls docker:// from a registry; docker-daemon:// needs a Docker daemon on every node.
        raise ConfigError(
            f"container is {container!r}; name a versioned registry image (docker://registry/name:version) "
            "or the path of an apptainer .sif file."
        )
    _check_resources(config)
    presets = config["lora_presets"]
    used = {method for entry in config["experiments"]["finetune"] for method in entry["methods"]}
    for method, section in config["methods"].items():
        preset = section.get("lora")
        # Every method's section is filled in; only the methods an experiment trains must name a preset that exists.
        if method in used and preset is not None and preset not in presets:
            raise ConfigError(f"methods.{method}.lora names preset {preset!r}, which lora_presets does not define.")
        accel = section["accelerate_config"]
        if accel is not None and not (ACCELERATE_DIR / f"{accel}.yaml").is_file():
            raise ConfigError(
                f"methods.{method}.accelerate_config is {accel!r} but config/accelerate/{accel}.yaml does not exist."
            )
    experiments = config["experiments"]
    trainings = [("training", config["training"])] + [
        (f"experiments.finetune[{i}].training", entry_training(config, entry))
        for i, entry in enumerate(experiments["finetune"])
    ]
    for key, training in trainings:
        if training.get("batching") == "packing" and training.get("attn_implementation") == "flash_attention_2":
            # flash_attention_2 keeps packed examples apart only in a single-row batch (transformers reads
            # the boundaries from position_ids then); with several rows every example attends to the others.
            raise ConfigError(
                f"{key} packs examples under flash_attention_2, which would attend across them; "
                "use batching pad_to_longest or attn_implementation sdpa."
            )
    seen: set[tuple[str, str, str]] = set()
    for kind in ("finetune", "baselines"):
        for i, entry in enumerate(experiments[kind]):
            for model in entry["models"]:
                if model not in models:
                    raise ConfigError(
                        f"experiments.{kind}[{i}].models names {model!r}, which is not defined under models."
                    )
    from ..tasks import custom

    custom.check(config, tasks.built_in())
    task_set = tasks.TaskSet.of(config)
    for i, entry in enumerate(experiments["finetune"]):
        for model in entry["models"]:
            if models[model].get("api"):
                raise ConfigError(
                    f"experiments.finetune[{i}].models names {model!r}, an api model, which cannot be fine-tuned; "
                    "list it under experiments.baselines."
                )
    for i, entry in enumerate(experiments["baselines"]):
        if not task_set.get(entry["task"]).metrics:
            raise ConfigError(f"experiments.baselines[{i}] evaluates {entry['task']}, which has no scorer; remove it.")
    for i, entry in enumerate(experiments["finetune"]):
        own_seed = entry_training(config, entry)["seed"]
        if own_seed in entry["seeds"]:
            raise ConfigError(
                f"experiments.finetune[{i}].seeds lists {own_seed}, the seed its runs already train with; "
                "list only the extra seeds."
            )
        for method in entry["methods"]:
            primary = run_name(method, entry["tag"])
            for run in [primary] + [seed_run_name(primary, seed) for seed in entry["seeds"]]:
                for model in entry["models"]:
                    key = (entry["task"], model, run)
                    if key in seen:
                        raise ConfigError(
                            f"experiments.finetune[{i}] repeats run {entry['task']}/{model}/{run}; "
                            "give one of them a tag."
                        )
                    seen.add(key)
        if entry["evaluate"] and not task_set.get(entry["task"]).metrics:
            raise ConfigError(
                f"experiments.finetune[{i}] evaluates {entry['task']}, which has no scorer; set evaluate: false."
            )
    for i, entry in enumerate(experiments["finetune"]):
        init = entry["init_from"]
        if init:
            for method in entry["methods"]:
                for model in entry["models"]:
                    first = (init["task"], model, run_name(method, init.get("tag")))
                    if first not in seen:
                        raise ConfigError(
                            f"experiments.finetune[{i}].init_from needs the run {'/'.join(first)}, which no finetune "
                            "entry trains."
                        )
    _check_comparisons(config, task_set)


def _check_comparisons(config: Mapping, task_set: tasks.TaskSet) -> None:
    """Each comparison names a task with a scorer and models that exist, under an id of its own."""
    ids: set[str] = set()
    for i, comparison in enumerate(config["comparisons"]):
        where = f"comparisons[{i}]"
        if comparison["id"] in ids:
            raise ConfigError(f"{where}.id {comparison['id']!r} repeats an earlier comparison's; give it another.")
        ids.add(comparison["id"])
        task = comparison["task"]
        if task not in task_set.names():
            raise ConfigError(f"{where}.task {task!r} is neither built in nor declared under tasks.")
        metrics = task_set.get(task).metrics
        if comparison["metric"] != "primary" and comparison["metric"] not in metrics:
            raise ConfigError(
                f"{where}.metric {comparison['metric']!r} is not a metric of {task}; use primary or one of "
                f"{', '.join(metrics)}."
            )
        for side in ("better", "than"):
            model = comparison[side].get("model")
            if model is not None and model not in config["models"]:
                raise ConfigError(f"{where}.{side}.model {model!r} is not defined under models.")


def data_mirror(config: Mapping) -> Path | None:
    """The mirror directory: the environment variable wins over the config key; None means the hub."""
    value = os.environ.get(MIRROR_ENV) or config["data"]["mirror"]
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        source = MIRROR_ENV if os.environ.get(MIRROR_ENV) else "data.mirror"
        raise ConfigError(
            f"{source} is {value!r}, which is not a directory; point it at the dataset mirror or unset it to read the "
            "hub."
        )
    return path.resolve()


def _check_resources(config: Mapping) -> None:
    """Rows that no node can hold, or that the SLURM plugin cannot express, fail before any job."""
    table = config["resources"]
    rows = [("resources.default", table["default"], "default")]
    rows += [(f"resources.evaluate.{size}", row, "evaluate") for size, row in table["evaluate"].items()]
    rows += [
        (f"resources.train.{size}.{method}", row, "train")
        for size, methods in table["train"].items()
        for method, row in methods.items()
    ]
    most = table["max_gpus_per_node"]
    for key, row, kind in rows:
        row = {**table["default"], **row}  # a row names what differs from the filled default row
        gpu = row["gpu"]
        nodes = row["nodes"]
        per_node = row.get("processes") or max(1, gpu)
        if gpu > most:
            spread = -(-gpu // most)  # nodes each old node becomes
            raise ConfigError(
                f"{key} asks for {gpu} GPUs on one node but resources.max_gpus_per_node is {most}; "
                f"spread the job over more nodes (nodes: {nodes * spread}, gpu: {-(-gpu // spread)})."
            )
        if gpu and per_node > gpu:
            raise ConfigError(
                f"{key} starts {per_node} processes per node on {gpu} GPUs; give each process its own GPU."
            )
        if kind == "evaluate" and nodes > 1:
            raise ConfigError(
                f"{key} asks for {nodes} nodes, but evaluation loads a model on the GPUs of one node; set nodes: 1."
            )
        if nodes > 1 and gpu and per_node == 1:
            raise ConfigError(
                f"{key} runs one GPU on each of {nodes} nodes; put at least 2 GPUs on each node or use one node."
            )
        if nodes > 1 and row["threads"] % per_node:
            raise ConfigError(
                f"{key} gives {row['threads']} threads per node to {per_node} processes; "
                "make threads a multiple of the processes per node."
            )
        if gpu and row.get("gpu_model") and row["gpu_model"] not in table["gpu_memory_gb"]:
            raise ConfigError(
                f"{key} names gpu_model {row['gpu_model']!r}, which resources.gpu_memory_gb does not list; "
                "add its memory in GB."
            )
