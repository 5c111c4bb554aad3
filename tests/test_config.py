"""The experiment configs validate, and malformed ones fail with one sentence naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from tunebench import config as tb_config
from tunebench.util.errors import ConfigError


@pytest.fixture(scope="module")
def demo(repo_root):
    return yaml.safe_load((repo_root / "config" / "demo.yaml").read_text())


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_validate(repo_root, name):
    cfg = tb_config.load(repo_root / "config" / name)
    assert cfg["training"]["epochs"] >= 1
    assert cfg.finetune and cfg.baselines


def test_paper_config_holds_the_matrix(repo_root):
    cfg = tb_config.load(repo_root / "config" / "config.yaml")
    runs = {(r.task, r.model, r.run) for r in cfg.finetune}
    for task in ("viggo", "sql", "gsm8k"):
        for size in ("7b", "13b", "70b"):
            for method in ("full", "lora", "qlora"):
                assert (task, f"llama2-{size}", method) in runs
    assert ("gsm8k", "llama2-13b", "full-two_stage") in runs
    assert ("viggo", "llama2-7b", "lora-instruction") in runs


def test_defaults_are_filled(demo):
    cfg = tb_config.validate(copy.deepcopy(demo))
    assert cfg["evaluation"]["sql_databases"] == 3
    assert cfg["tasks"]["gsm8k"]["strip_calculator_notes"] is False


def test_each_task_has_its_own_generation_limit_and_few_shot(demo):
    cfg = tb_config.validate(copy.deepcopy(demo))
    assert tb_config.max_new_tokens(cfg, "viggo") == 64  # the demo's own
    assert tb_config.max_new_tokens(cfg, "mathqa") == 256  # unset: the task module's value
    assert tb_config.few_shot(cfg, "gsm8k") == 2 and tb_config.few_shot(cfg, "viggo") is None


@pytest.mark.parametrize("key, value", [("max_new_tokens", {"viggo": 32}), ("few_shot", 4)])
def test_the_former_evaluation_keys_are_refused_naming_the_new_one(demo, key, value):
    cfg = copy.deepcopy(demo)
    cfg["evaluation"][key] = value
    with pytest.raises(ConfigError) as caught:
        tb_config.validate(cfg)
    message = str(caught.value)
    assert f"evaluation.{key} is no longer read" in message and f"tasks.<task>.{key}" in message and "\n" not in message


def _set(cfg, path, value):
    keys = path.split(".")
    node = cfg
    for key in keys[:-1]:
        node = node.setdefault(key, {}) if not key.isdigit() else node[int(key)]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()

# Where the demo config lists the MathQA stage, which must not be evaluated.
_MATHQA = next(
    i
    for i, entry in enumerate(
        yaml.safe_load((tb_config.ROOT / "config" / "demo.yaml").read_text())["experiments"]["finetune"]
    )
    if entry["task"] == "mathqa"
)

MALFORMED = [
    # (description, path, value, words the message must contain)
    ("unknown task", "tasks.summarise", {}, ["summarise", "tasks"]),
    (
        "unknown method in an experiment",
        "experiments.finetune.0.methods",
        ["prefix_tuning"],
        ["experiments.finetune.0.methods.0", "prefix_tuning"],
    ),
    (
        "unknown model in an experiment",
        "experiments.finetune.0.models",
        ["gpt-5"],
        ["experiments.finetune[0].models", "gpt-5"],
    ),
    ("negative learning rate", "methods.lora.learning_rate", -0.001, ["methods.lora.learning_rate", "greater than 0"]),
    ("missing required models", "models", _DELETE, ["models", "missing"]),
    ("wrong type of epochs", "training.epochs", "ten", ["training.epochs", "integer"]),
    ("unknown top-level key", "trainer", {}, ["trainer"]),
    ("unknown batching mode", "training.batching", "bucket", ["training.batching", "packing"]),
    ("bad fraction", "data.max_bad_fraction", 1.5, ["data.max_bad_fraction", "at most 1"]),
    ("undefined LoRA preset", "methods.lora.lora", "huge", ["methods.lora.lora", "huge"]),
    ("missing accelerate file", "methods.full.accelerate_config", "zero9", ["methods.full.accelerate_config", "zero9"]),
    (
        "unknown task in an experiment",
        "experiments.baselines.0.task",
        "translation",
        ["experiments.baselines.0.task", "translation"],
    ),
    ("model without base", "models.smollm2-135m.base", _DELETE, ["models.smollm2-135m", "base"]),
    ("two weight sources", "models.smollm2-135m.base.hub", "org/model", ["models.smollm2-135m.base", "exactly one"]),
    ("wrong type of digits", "tasks.multiplication.digits", [4], ["tasks.multiplication.digits"]),
    (
        "evaluating mathqa",
        f"experiments.finetune.{_MATHQA}.evaluate",
        True,
        [f"experiments.finetune[{_MATHQA}]", "mathqa"],
    ),
    ("unknown key in training", "training.lr", 0.1, ["lr", "training"]),
]


@pytest.mark.parametrize("description,path,value,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_names_the_key(demo, description, path, value, words):
    cfg = copy.deepcopy(demo)
    _set(cfg, path, value)
    with pytest.raises(ConfigError) as info:
        tb_config.validate(cfg)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{description}: {word!r} not in {message!r}"


def test_two_stage_needs_its_first_stage(demo):
    cfg = copy.deepcopy(demo)
    cfg["experiments"]["finetune"] = [e for e in cfg["experiments"]["finetune"] if e["task"] != "mathqa"]
    with pytest.raises(ConfigError, match="init_from needs the run mathqa/smollm2-135m/lora"):
        tb_config.validate(cfg)


def test_extra_seeds_add_runs_that_differ_only_in_their_seed(demo):
    """The run's own seed is settled in the run (the config's seed when training names none)."""
    cfg = copy.deepcopy(demo)
    cfg["experiments"]["finetune"] = [
        {"task": "viggo", "models": ["smollm2-135m"], "methods": ["lora"], "seeds": [1, 2]}
    ]
    runs = tb_config.validate(cfg).finetune
    assert [(run.run, run.training["seed"], run.replicate_of) for run in runs] == [
        ("lora", cfg["seed"], None),
        ("lora-seed1", 1, "lora"),
        ("lora-seed2", 2, "lora"),
    ]
    assert {key: value for key, value in runs[1].training.items() if key != "seed"} == {
        key: value for key, value in runs[0].training.items() if key != "seed"
    }


def test_an_extra_seed_equal_to_the_runs_own_is_refused(demo):
    cfg = copy.deepcopy(demo)
    cfg["experiments"]["finetune"] = [
        {"task": "viggo", "models": ["smollm2-135m"], "methods": ["lora"], "seeds": [7, cfg["seed"]]}
    ]
    with pytest.raises(ConfigError, match=r"experiments.finetune\[0\].seeds lists 42, the seed its runs already train"):
        tb_config.validate(cfg)


def test_resources_by_size_and_method(repo_root):
    cfg = tb_config.load(repo_root / "config" / "config.yaml")
    full70 = cfg.resources("train", "llama2-70b", "full")
    # Study A's 32 A10G are 4 nodes of 8; the process count is derived, never typed.
    assert (full70["nodes"], full70["gpu"], full70["gpu_model"]) == (4, 8, "a10g")
    assert (full70["processes_per_node"], full70["processes"], full70["gpus"]) == (8, 32, 32)
    assert cfg.resources("evaluate", "llama2-7b")["gpu"] == 1
    tiny = tb_config.load(repo_root / ".test" / "config.yaml").resources("train", "tiny-llama", "full")
    assert (tiny["nodes"], tiny["processes_per_node"], tiny["processes"]) == (1, 2, 2)


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"gpu": 16, "gpu_model": "a10g"},
            r"resources.train.70B.full asks for 16 GPUs on one node but resources.max_gpus_per_node is 8; .*nodes: 2, "
            r"gpu: 8",
        ),
        ({"nodes": 2, "gpu": 1, "gpu_model": "a10g"}, "runs one GPU on each of 2 nodes"),
        ({"nodes": 2, "gpu": 8, "gpu_model": "a10g", "threads": 12}, "gives 12 threads per node to 8 processes"),
        ({"gpu": 8, "gpu_model": "b200"}, "names gpu_model 'b200', which resources.gpu_memory_gb does not list"),
    ],
)
def test_rows_no_node_can_hold_are_refused_in_one_sentence(repo_root, row, message):
    cfg = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    cfg["resources"]["train"]["70B"]["full"] = row
    with pytest.raises(ConfigError, match=message) as caught:
        tb_config.validate(cfg)
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")


def test_evaluation_runs_on_one_node(repo_root):
    cfg = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    cfg["resources"]["evaluate"]["70B"]["nodes"] = 2
    message = "resources.evaluate.70B asks for 2 nodes, but evaluation loads a model on the GPUs of one node"
    with pytest.raises(ConfigError, match=message):
        tb_config.validate(cfg)


def test_mirror_env_wins_and_bad_path_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv(tb_config.MIRROR_ENV, str(tmp_path))
    assert tb_config.data_mirror({"data": {"mirror": "/elsewhere"}}) == tmp_path.resolve()
    monkeypatch.setenv(tb_config.MIRROR_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="TUNEBENCH_DATA_MIRROR"):
        tb_config.data_mirror({})
    monkeypatch.delenv(tb_config.MIRROR_ENV)
    assert tb_config.data_mirror({"data": {"mirror": None}}) is None


def test_validation_returns_a_frozen_experiment_over_the_dict_it_filled(demo):
    cfg = copy.deepcopy(demo)
    experiment = tb_config.validate(cfg)
    assert experiment.config is cfg and isinstance(cfg, dict)  # Snakemake's config stays the dict it filled
    assert experiment["training"] is cfg["training"] and set(experiment) == set(cfg)
    with pytest.raises(TypeError):
        experiment["seed"] = 1  # read like the mapping, never written through
    with pytest.raises(AttributeError):
        experiment.finetune = ()
    lora = experiment.run("viggo", "smollm2-135m", "lora")
    assert lora in experiment.finetune and experiment.run("viggo", "smollm2-135m", "baseline").is_baseline
    assert experiment.evaluated == tuple(r for r in experiment.finetune if r.evaluate) + experiment.baselines


@pytest.mark.parametrize(
    ("run", "finetuned", "message"),
    [
        ("dora", False, "no finetune experiment trains viggo/smollm2-135m/dora; add it to experiments.finetune."),
        (
            "baseline",
            True,
            "no finetune experiment trains viggo/smollm2-135m/baseline; add it to experiments.finetune.",
        ),
        (
            "baseline-stepwise",
            False,
            "no baseline experiment evaluates viggo/smollm2-135m/baseline-stepwise; add it to experiments.baselines.",
        ),
    ],
)
def test_a_run_the_experiment_lacks_is_one_sentence_naming_the_list_to_add_it_to(demo, run, finetuned, message):
    experiment = tb_config.validate(copy.deepcopy(demo))
    with pytest.raises(ConfigError) as info:
        experiment.run("viggo", "smollm2-135m", run, finetuned=finetuned)
    assert str(info.value) == message


def test_experiment_overrides_only_what_they_name(repo_root):
    cfg = tb_config.load(repo_root / "config" / "demo.yaml")
    run = cfg.run("viggo", "smollm2-135m", "qlora", finetuned=True)
    assert run.training["epochs"] == 1  # the override
    assert cfg["training"]["epochs"] == 2 != 10  # the top level differs from the schema default ...
    assert run.training["batch_size"] == cfg["training"]["batch_size"] == 2  # ... and is kept where not overridden
    assert run.training["batching"] == "packing"
    assert cfg.run("viggo", "smollm2-135m", "lora", finetuned=True).training["epochs"] == 2


YAML_ERRORS = [
    # (description, file text, words the message must contain)
    ("unclosed bracket", "seed: 1\nmodels: [a, b\ntraining: {}\n", ["line 3", "not valid YAML"]),
    ("bad indentation", "seed: 1\ntraining:\n  epochs: 2\n    batch_size: 4\n", ["line 4", "not valid YAML"]),
    ("tab indentation", "seed: 1\ntraining:\n\tepochs: 2\n", ["line 3", "not valid YAML"]),
    ("duplicate top-level key", "seed: 1\ntraining:\n  epochs: 2\nseed: 2\n", ["line 4", "'seed'", "line 1"]),
    ("duplicate nested key", "training:\n  epochs: 2\n  lr: 1\n  epochs: 3\n", ["line 4", "'epochs'", "line 2"]),
    ("duplicate key in a flow mapping", "training: {epochs: 2, epochs: 3}\n", ["line 1", "'epochs'"]),
]


@pytest.mark.parametrize("description,text,words", YAML_ERRORS, ids=[e[0] for e in YAML_ERRORS])
def test_yaml_errors_name_file_and_line(tmp_path, description, text, words):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        tb_config.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, f"{description}: {word!r} not in {message!r}"


def test_repeated_key_in_the_demo_config_is_refused(repo_root, tmp_path):
    """A key repeated in a real config (a second `seed:` at the end) is an error, not a silent override."""
    path = tmp_path / "demo.yaml"
    path.write_text((repo_root / "config" / "demo.yaml").read_text() + "\nseed: 7\n")
    with pytest.raises(ConfigError, match=r"line \d+.*'seed' repeats the one on line \d+"):
        tb_config.load(path)


def test_a_configs_lora_presets_join_the_built_in_ones(demo):
    config = copy.deepcopy(demo)
    config["lora_presets"] = {"mine": {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj"]}}
    config["methods"] = {"lora": {"lora": "mine"}, "qlora": {}}  # qlora keeps its default preset, study_b
    cfg = tb_config.validate(copy.deepcopy(config))
    assert set(cfg["lora_presets"]) == {"template", "study_b", "mine"}
    assert cfg["lora_presets"]["mine"]["r"] == 2 and cfg["methods"]["qlora"]["lora"] == "study_b"
    config["lora_presets"]["study_b"] = {"r": 8, "alpha": 8, "dropout": 0.0, "target_modules": ["v_proj"]}
    assert tb_config.validate(config)["lora_presets"]["study_b"]["r"] == 8  # a config's own wins


def test_a_model_without_a_size_gets_a_label_from_what_it_is(demo):
    config = copy.deepcopy(demo)
    name, model = next(iter(config["models"].items()))
    sizes = {}
    for extra in ({"params_b": 0.135}, {"params_b": 7}, {}):
        config["models"] = {name: {**{k: v for k, v in model.items() if k not in ("size", "params_b")}, **extra}}
        sizes[str(extra)] = tb_config.validate(copy.deepcopy(config))["models"][name]["size"]
    assert list(sizes.values()) == ["135M", "7B", name]
    remote = {"api": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    config = {"models": {"remote": remote}, "experiments": {"baselines": [{"task": "gsm8k", "models": ["remote"]}]}}
    assert tb_config.validate(config)["models"]["remote"]["size"] == "API"
