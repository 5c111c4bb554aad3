"""The evaluation stage on the tiny random Llama: files by the contract, prompts, scoring, errors.

The random model's answers are noise, so its metrics are not asserted; what is asserted is that
every test row is written once and in order, that token counts belong to the prompt the run
specifies, that the metrics are the means of the written verdicts with intervals around them, and
that the gold completions pushed through the same plumbing score perfectly.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from train_support import tiny_config, tokenizer_dir, train_in_process, write_data  # noqa: F401  (session fixture)
from tunebench import config as tb_config
from tunebench import tasks
from tunebench.commands import cli
from tunebench.config import digests as tb_digests
from tunebench.stages import dataset, formats, models
from tunebench.stages import evaluate as tb_evaluate
from tunebench.stages import score as scoring
from tunebench.stages.formats import encode_prompt
from tunebench.stages.generate import Generation
from tunebench.tasks import data
from tunebench.util import hardware
from tunebench.util.errors import ConfigError, DataError

SCORED = ("viggo", "sql", "gsm8k", "multiplication")
CONTRACT_KEYS = {
    "task",
    "model",
    "run",
    "method",
    "stage",
    "format",
    "variant",
    "n",
    "unscorable",
    "metrics",
    "prompt_tokens_mean",
    "generated_tokens_mean",
    "wall_time_s",
    "tokens_per_s",
    "batch_size",
}
PREDICTION_KEYS = {"id", "prompt", "output", "extracted", "answer", "verdict"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices; spinning OpenMP workers would only slow other jobs
    yield
    torch.set_num_threads(before)


def eval_config(tokenizer_dir, mirror, max_new_tokens=(), **evaluation) -> dict:  # noqa: F811
    max_new_tokens = dict(max_new_tokens)
    config = tiny_config(tokenizer_dir, methods=["lora"])
    config["models"]["tiny"]["base"]["random_llama"]["max_position_embeddings"] = 2048  # the few-shot prompts are long
    config["data"] = {"mirror": str(mirror)}
    config["tasks"] = {
        task: {"limit": {"train": 40, "validation": 4, "test": 5}, "max_new_tokens": 6} for task in SCORED
    }
    config["tasks"]["multiplication"]["rows"] = 400
    config["tasks"]["gsm8k"]["few_shot"] = 2
    for task, limit in max_new_tokens.items():
        config["tasks"][task]["max_new_tokens"] = limit
    config["evaluation"] = {"batch_size": 2, "bootstrap_samples": 200, **evaluation}
    config["experiments"]["baselines"] = [
        {
            "task": task,
            "models": ["tiny"],
            **({"variants": ["default", "stepwise"]} if task == "multiplication" else {}),
        }
        for task in SCORED
    ]
    return tb_config.validate(config)


@pytest.fixture(scope="module")
def config(tokenizer_dir, mirror):  # noqa: F811
    return eval_config(tokenizer_dir, mirror)


@pytest.fixture(scope="module")
def prepared(config, tmp_path_factory):
    """Each scored task prepared from the mirror (multiplication generated), cut to 5 test rows."""
    root = tmp_path_factory.mktemp("data")
    for task in SCORED:
        rows, manifest = dataset.prepare(task, config)
        dataset.write(root / task, rows, manifest)
    return root


@pytest.fixture(scope="module")
def loaded(config):
    source = config["models"]["tiny"]["base"]
    tokenizer = models.load_tokenizer(source)
    return models.load_model(source).eval(), tokenizer


def read_predictions(directory):
    return [json.loads(line) for line in (directory / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "task, run",
    [("viggo", "baseline"), ("sql", "baseline"), ("gsm8k", "baseline"), ("multiplication", "baseline-stepwise")],
)
def test_a_baseline_writes_every_test_row_and_metrics_by_the_contract(config, prepared, loaded, tmp_path, task, run):
    model, tokenizer = loaded
    metrics = tb_evaluate.evaluate(config, task, "tiny", run, data_dir=prepared / task, out_dir=tmp_path, loaded=loaded)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["settings_hash"] == tb_digests.score_hash(config, task, "tiny", run)  # what aggregate checks
    generated = json.loads((tmp_path / "generation.json").read_text())
    assert (
        generated["settings_hash"] == metrics["generation_hash"] == tb_digests.generate_hash(config, task, "tiny", run)
    )
    assert metrics["code"]["score"] == tb_digests.score_code(config.tasks.get(task)) and metrics["code"]["version"]
    rows = data.read_split(prepared / task, "test")
    train = data.read_split(prepared / task, "train")
    predictions = read_predictions(tmp_path)
    assert [p["id"] for p in predictions] == [r["id"] for r in rows]
    assert [p["answer"] for p in predictions] == [r["answer"] for r in rows]
    definition = tasks.get(task)
    variant = "stepwise" if run.endswith("stepwise") else "default"
    for prediction, row in zip(predictions, rows):
        assert PREDICTION_KEYS <= set(prediction)
        assert list(prediction["verdict"]) == list(definition.metrics)
        assert "<|im_end|>" not in prediction["output"]
        messages = definition.baseline_messages(row, train, variant, config["tasks"][task])
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert prediction["prompt_tokens"] == len(encode_prompt(tokenizer, text))
        assert prediction["generated_tokens"] <= 6
    assert CONTRACT_KEYS <= set(metrics)
    assert (metrics["task"], metrics["model"], metrics["run"]) == (task, "tiny", run)
    assert (metrics["method"], metrics["stage"], metrics["format"], metrics["variant"]) == (
        "prompted",
        "baseline",
        "chat",
        variant,
    )
    assert metrics["n"] == len(rows) and metrics["batch_size"] == 2
    assert metrics["unscorable"] == sum(any(v is None for v in p["verdict"].values()) for p in predictions)
    assert metrics["prompt_tokens_mean"] == pytest.approx(sum(p["prompt_tokens"] for p in predictions) / len(rows))
    assert list(metrics["metrics"]) == list(definition.metrics)
    for name, entry in metrics["metrics"].items():
        verdicts = [p["verdict"][name] for p in predictions if p["verdict"][name] is not None]
        assert entry["n"] == len(verdicts)
        assert entry["value"] == pytest.approx(sum(verdicts) / len(verdicts))
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]


def test_gold_completions_score_perfectly_through_the_same_plumbing(config, prepared):
    for task in SCORED:
        spec = tb_evaluate.resolve(config, task, "tiny", "baseline")
        rows = data.read_split(prepared / task, "test")
        gold = [tb_evaluate.generation_record(row, Generation(row["completion"], 10, 5, "end_token")) for row in rows]
        records = scoring.predictions(config.tasks.get(task), rows, gold, scoring.scorer_options(config, task))
        facts = {"max_new_tokens": 6, "settings_hash": tb_digests.generate_hash(config, task, "tiny", "baseline")}
        summary = scoring.summary(spec, records, config, facts)
        scorable = [r for r in records if None not in r["verdict"].values()]
        assert len(scorable) >= len(rows) - 1, task
        assert all(all(r["verdict"].values()) for r in scorable), task
        assert all(m["value"] == 1.0 for m in summary["metrics"].values() if m["n"]), task


def test_predictions_are_the_same_at_any_batch_size(config, prepared, loaded, tmp_path):
    outputs = []
    for batch_size in (1, 5):
        settings = tb_config.validate(
            dict(
                config,
                evaluation=dict(config["evaluation"], batch_size=batch_size),
                tasks=dict(config["tasks"], multiplication=dict(config["tasks"]["multiplication"], max_new_tokens=12)),
            )
        )
        out = tmp_path / str(batch_size)
        tb_evaluate.evaluate(
            settings,
            "multiplication",
            "tiny",
            "baseline",
            data_dir=prepared / "multiplication",
            out_dir=out,
            loaded=loaded,
        )
        outputs.append((out / "predictions.jsonl").read_bytes())
    assert outputs[0] == outputs[1]


def test_the_command_evaluates_a_fine_tuned_lora_checkpoint(tokenizer_dir, mirror, tmp_path):  # noqa: F811
    settings = eval_config(tokenizer_dir, mirror)
    data_dir = write_data(tmp_path / "data", train=8, validation=4, test=3)
    train_dir = tmp_path / "train" / "lora"
    train_in_process(settings.config, "lora", train_dir, data_dir)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(settings.config))
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunebench.commands.cli",
            "evaluate",
            "--config",
            str(config_file),
            "--task",
            "multiplication",
            "--model",
            "tiny",
            "--run",
            "lora",
            "--data-dir",
            str(data_dir),
            "--train-dir",
            str(train_dir),
            "--out-dir",
            str(out),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("multiplication/tiny/lora: n=3")
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["method"], metrics["stage"], metrics["format"], metrics["variant"]) == (
        "lora",
        "finetuned",
        "special_tokens",
        None,
    )
    tokenizer = AutoTokenizer.from_pretrained(train_dir / "checkpoint")
    assert "<END_A>" in tokenizer.get_vocab()
    rows = data.read_split(data_dir, "test")
    predictions = read_predictions(out)
    for prediction, row in zip(predictions, rows):
        prompt = formats.render_prompt("special_tokens", "multiplication", row, tokenizer)
        assert prediction["prompt_tokens"] == len(encode_prompt(tokenizer, prompt))
        assert "<END_A>" not in prediction["output"]


def test_the_test_split_is_cut_to_the_configured_limit(config, tmp_path):
    rows = [
        {
            "id": f"multiplication-test-{i:05d}",
            "prompt": f"What is {i} * 3?",
            "completion": str(3 * i),
            "answer": str(3 * i),
        }
        for i in range(12)
    ]
    data.write_rows(tmp_path / "test.jsonl", rows)
    cut = tb_evaluate.test_rows(config, "multiplication", tmp_path)
    assert cut == data.limit_rows(rows, 5, config["seed"], "multiplication", "test") and len(cut) == 5
    data.write_rows(tmp_path / "test.jsonl", cut)
    assert tb_evaluate.test_rows(config, "multiplication", tmp_path) == cut


def test_user_errors_end_in_one_sentence(config, prepared, loaded, tmp_path, capsys):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.config))
    common = [
        "evaluate",
        "--config",
        str(config_file),
        "--task",
        "multiplication",
        "--model",
        "tiny",
        "--data-dir",
        str(prepared / "multiplication"),
        "--out-dir",
        str(tmp_path / "out"),
    ]
    cases = [
        (["--run", "full"], "add it to experiments.finetune"),
        (["--run", "lora", "--train-dir", str(tmp_path / "missing")], "best.json does not exist"),
        (["--run", "baseline", "--threads", "0"], "--threads is 0"),
    ]
    for extra, expected in cases:
        assert cli.main(common + extra) == 2
        message = capsys.readouterr().err.strip()
        assert expected in message and len(message.splitlines()) == 1 and "Traceback" not in message
    with pytest.raises(DataError, match="does not exist"):
        tb_evaluate.evaluate(
            config, "multiplication", "tiny", "baseline", data_dir=tmp_path / "nowhere", out_dir=tmp_path, loaded=loaded
        )
    too_long = tb_config.validate(
        dict(
            config,
            tasks=dict(config["tasks"], multiplication=dict(config["tasks"]["multiplication"], max_new_tokens=100_000)),
        )
    )
    with pytest.raises(ConfigError, match="context of 2048 tokens"):
        tb_evaluate.evaluate(
            too_long,
            "multiplication",
            "tiny",
            "baseline",
            data_dir=prepared / "multiplication",
            out_dir=tmp_path,
            loaded=loaded,
        )
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "kernel",
    [
        "portable",
        pytest.param(
            "avx512_bf16",
            marks=pytest.mark.skipif(not hardware.bnb_has_avx512_bf16(), reason="this CPU has no AVX512_BF16"),
        ),
    ],
)
def test_a_qlora_checkpoint_decodes_the_same_at_any_batch_size(kernel, tokenizer_dir, mirror, tmp_path, monkeypatch):  # noqa: F811
    """On each of bitsandbytes' CPU 4-bit paths, and metrics.json says which one ran."""
    monkeypatch.setenv(hardware.BNB_CPU_KERNEL_ENV, "portable" if kernel == "portable" else "auto")
    raw = copy.deepcopy(eval_config(tokenizer_dir, mirror, max_new_tokens={"multiplication": 10}).config)
    raw["experiments"]["finetune"][0]["methods"] = ["qlora"]
    settings = tb_config.validate(raw)  # the run matrix is resolved by validation, so the edit is validated again
    data_dir = write_data(tmp_path / "data", train=8, validation=4, test=5)
    train_dir = tmp_path / "train" / "qlora"
    train_in_process(settings, "qlora", train_dir, data_dir)
    outputs = []
    for batch_size in (1, 5):
        settings["evaluation"]["batch_size"] = batch_size
        out = tmp_path / f"eval-{batch_size}"
        metrics = tb_evaluate.evaluate(
            settings, "multiplication", "tiny", "qlora", data_dir=data_dir, out_dir=out, train_dir=train_dir
        )
        assert (metrics["method"], metrics["stage"], metrics["n"]) == ("qlora", "finetuned", 5)
        assert metrics["hardware"]["bnb_4bit_kernel_used"] == kernel
        outputs.append((out / "predictions.jsonl").read_bytes())
    assert outputs[0] == outputs[1]


def test_an_unreachable_hub_model_is_one_sentence_naming_the_key(config, prepared, tmp_path):
    """The baseline's chat source names a hub model that cannot be fetched (offline here, as on a cluster
    node without network): exit status 2 and one sentence, not transformers' 90-line traceback."""
    broken = json.loads(json.dumps(config.config))
    broken["models"]["tiny"]["chat"] = {"hub": "no-such-org/no-such-model", "revision": None}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(broken))
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunebench",
            "evaluate",
            "--config",
            str(config_file),
            "--task",
            "multiplication",
            "--model",
            "tiny",
            "--run",
            "baseline",
            "--data-dir",
            str(prepared / "multiplication"),
            "--out-dir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "models.tiny.chat (no-such-org/no-such-model@main) could not be loaded" in message
    assert not (tmp_path / "out" / "metrics.json").exists()
