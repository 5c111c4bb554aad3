"""Experiment trackers: a tracked training run and evaluation land in a real local MLflow store and TensorBoard
event files; an untracked one writes neither and imports neither library; the records themselves do not change."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Imported before any test runs a command in this process: a command with MLflow off keeps a process that has
# not loaded mlflow from loading it later.
from mlflow.tracking import MlflowClient

from train_support import TINY_LLAMA, step_losses, tiny_config, tokenizer_dir, write_data  # noqa: F401
from tunebench import config as tb_config
from tunebench.stages import tracking

# Train, generate and score through the CLI in one process, as the workflow's three jobs do (the scoring job
# logs the evaluation); print the tracker libraries it imported.
SCRIPT = """
import json, sys
from tunebench.commands import cli

config, data = sys.argv[1:]
common = ["--config", config, "--task", "multiplication", "--model", "tiny", "--run", "lora", "--data-dir", data]
assert cli.main(["train", *common, "--out-dir", "train"]) == 0
generate = ["evaluate", *common, "--train-dir", "train", "--out-dir", "eval", "--threads", "1", "--generate-only"]
assert cli.main(generate) == 0
assert cli.main(["score", "multiplication", "--generations", "eval", "--config", config, "--data-dir", data]) == 0
print(json.dumps(sorted(name for name in ("mlflow", "tensorboardX", "deepspeed") if sys.modules.get(name))))
"""


def train_and_evaluate(folder: Path, tokenizer_dir: Path, tracking_section: dict) -> list[str]:  # noqa: F811
    """The tiny LoRA run trained and evaluated by the commands with ``folder`` as the workflow's folder; the
    tracker libraries (and DeepSpeed) the process imported."""
    config = tiny_config(tokenizer_dir, training={"batch_size": 8}, methods=["lora"])
    config["models"]["tiny"]["base"]["random_llama"] = dict(TINY_LLAMA, max_position_embeddings=2048)
    config["tracking"] = tracking_section
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(tb_config.validate(config).config))
    data = write_data(folder / "data", train=16, validation=4, test=3)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "config.yaml", str(data)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def tensorboard_scalars(folder: Path) -> dict[str, list[float]]:
    """Every scalar in the TensorBoard event files under ``folder`` (TFRecord framing: length, crc, event, crc)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[float]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(value.simple_value)
    return scalars


@pytest.mark.slow
def test_tracked_runs_reach_a_local_mlflow_store_and_tensorboard_and_untracked_ones_write_nothing(
    tokenizer_dir,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only when told to

    # DeepSpeed, which imports mlflow wherever it can, is loaded; mlflow and the TensorBoard writer are not.
    assert train_and_evaluate(tmp_path / "off", tokenizer_dir, {}) == ["deepspeed"]
    assert not list((tmp_path / "off").rglob("mlruns")) and not list((tmp_path / "off").rglob("*tfevents*"))

    on = tmp_path / "on"
    assert train_and_evaluate(on, tokenizer_dir, {"mlflow": True, "tensorboard": True}) == [
        "deepspeed",
        "mlflow",
        "tensorboardX",
    ]
    # The records are the same with tracking on: the trackers only receive copies.
    assert step_losses(on / "train") == step_losses(tmp_path / "off" / "train") == [10.7822, 10.6949]
    metrics = json.loads((on / "eval" / "metrics.json").read_text())
    assert metrics == json.loads((tmp_path / "off" / "eval" / "metrics.json").read_text()) | {
        key: metrics[key] for key in ("wall_time_s", "tokens_per_s")
    }

    store = on / "results" / "mlruns"  # the default store, relative to the workflow's folder
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name("tunebench")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"train/multiplication/tiny/lora", "eval/multiplication/tiny/lora"}

    train = runs["train/multiplication/tiny/lora"]
    run_json = json.loads((on / "train" / "run.json").read_text())
    best = json.loads((on / "train" / "best.json").read_text())
    assert train.data.params["settings_hash"] == run_json["settings_hash"]
    assert train.data.params["training.batch_size"] == "8"
    losses = client.get_metric_history(train.info.run_id, "train/loss")
    assert [(m.step, round(m.value, 4)) for m in losses] == [(1, 10.7822), (2, 10.6949)]
    assert {"train/lr", "train/tokens_per_s", "epoch/train_loss", "epoch/tokens_per_s"} <= set(train.data.metrics)
    assert train.data.metrics["epoch/validation_perplexity"] == pytest.approx(best["validation_perplexity"], 1e-5)

    evaluation = runs["eval/multiplication/tiny/lora"]
    assert evaluation.data.params["settings_hash"] == metrics["settings_hash"]
    for name, metric in metrics["metrics"].items():
        assert evaluation.data.metrics[f"eval/{name}/value"] == pytest.approx(metric["value"])
    assert evaluation.data.metrics["eval/n"] == 3

    events = on / "results" / "tensorboard"
    train_scalars = tensorboard_scalars(events / "train")
    assert [round(v, 4) for v in train_scalars["train/loss"]] == [10.7822, 10.6949]
    eval_scalars = tensorboard_scalars(events / "eval")
    assert eval_scalars["eval/n"] == [3.0]


def with_tracking(**section) -> dict:
    """A valid config (the tiny model's, never loaded here) with this tracking section."""
    return tb_config.validate(tiny_config(Path("tokenizer"), methods=["lora"]) | {"tracking": section})


def test_the_section_resolves_relative_places_and_keeps_uris():
    assert not tracking.Tracking.from_config(with_tracking()).enabled
    folder = Path("/work/bench")
    on = with_tracking(mlflow=True, tensorboard=True)
    resolved = tracking.Tracking.from_config(on, folder)
    assert resolved.mlflow_uri == "file:///work/bench/results/mlruns"
    assert resolved.tensorboard_dir == folder / "results" / "tensorboard"
    assert resolved.accelerate_trackers() == ["mlflow", "tensorboard"]
    server = with_tracking(mlflow=True, mlflow_uri="http://127.0.0.1:5000")
    assert tracking.Tracking.from_config(server, folder).mlflow_uri == "http://127.0.0.1:5000"
    assert tracking.Tracking.from_config(server, folder).accelerate_trackers() == ["mlflow"]


def test_a_tracking_key_that_does_not_exist_is_refused_in_one_sentence():
    from tunebench.util.errors import ConfigError

    with pytest.raises(ConfigError, match="tracking"):
        with_tracking(wandb=True)


def test_settings_flatten_to_scalars_every_tracker_takes():
    flat = tracking.flat_params({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": True})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": "none", "e": True}
