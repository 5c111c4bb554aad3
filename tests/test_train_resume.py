"""A training run killed with SIGKILL and re-run ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from train_support import (  # noqa: F401
    cli_command,
    kill_when_saved,
    read_history,
    resolved,
    run_cli,
    tiny_config,
    tokenizer_dir,
    write_config,
    write_data,
)

TIMING = ("tokens_per_s", "wall_time_s", "peak_memory_mb")


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k not in TIMING} for line in history]


@pytest.mark.slow
def test_sigkill_after_epoch_one_and_again_in_epoch_two_then_rerun_matches_an_uninterrupted_run(
    tokenizer_dir, tmp_path
):
    # 12 rows in batches of 4: 3 steps an epoch, a state after every step and at every epoch's end;
    # LoRA dropout draws random numbers, so the RNG state must come back too.
    config = tiny_config(tokenizer_dir, training={"epochs": 3, "checkpoint_every_steps": 1}, methods=["lora"])
    config_path = write_config(tmp_path / "config.yaml", config)
    data = write_data(tmp_path / "data", train=12)

    straight = tmp_path / "straight" / "lora"
    result = run_cli(config_path, "lora", straight, data)
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed" / "lora"
    resume = killed.parent / "lora.resume"
    command = cli_command(config_path, "lora", killed, data)
    kill_when_saved(command, resume, "-e002s000000")  # epoch 1 finished, epoch 2 not started
    assert not (killed / "best.json").exists() and resume.is_dir()
    kill_when_saved(command, resume, "-e002s000001")  # one step into epoch 2
    result = run_cli(config_path, "lora", killed, data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming at epoch 2, step 1" in result.stderr

    assert _without_timing(read_history(killed)) == _without_timing(read_history(straight))
    assert len([h for h in read_history(killed) if h["kind"] == "epoch"]) == 3
    assert json.loads((killed / "best.json").read_text()) == json.loads((straight / "best.json").read_text())
    ours = load_file(killed / "checkpoint" / "adapter_model.safetensors")
    theirs = load_file(straight / "checkpoint" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all((ours[k] == theirs[k]).all() for k in ours)
    assert not resume.exists()


def test_resume_state_of_other_settings_is_discarded(tokenizer_dir, tmp_path):
    from accelerate import Accelerator

    from tunebench.stages.train.checkpoint import FINGERPRINT, ResumeDir

    directory = tmp_path / "lora.resume"
    directory.mkdir()
    (directory / FINGERPRINT).write_text(json.dumps({"fingerprint": "old"}))
    (directory / "state-0000002-e001s000002").mkdir()
    message = ResumeDir(directory, Accelerator(), "new").prepare()
    assert message and "other settings" in message
    assert [p.name for p in directory.iterdir()] == [FINGERPRINT]
    assert ResumeDir(directory, Accelerator(), "new").prepare() is None


def test_a_resume_state_belongs_to_the_training_code_that_saved_it(tokenizer_dir, tmp_path, monkeypatch):
    from tunebench.stages.train import job as tb_job

    job = resolved(tiny_config(tokenizer_dir), "lora", tmp_path / "lora", write_data(tmp_path / "data"))
    before = tb_job.fingerprint(job)
    assert tb_job.fingerprint(job) == before
    # An edit to the training loop changes its code hash; a state saved before the edit is then discarded.
    monkeypatch.setattr(tb_job.tb_digests, "train_code", lambda task: "0" * 16)
    assert tb_job.fingerprint(job) != before


#: config.json's keys in their order: the settings hash and the resume fingerprint are taken over them.
CONFIG_JSON = (
    "task",
    "model",
    "method",
    "run",
    "format",
    "stage",
    "seed",
    "base_source",
    "training",
    "method_settings",
    "init_from",
    "init_checkpoint",
    "nodes",
    "processes",
    "threads_per_node",
    "accelerate_config",
    "launch",
    "data",
    "settings_hash",
)


@pytest.mark.parametrize("run", ["lora-seed7", "full"])
def test_a_jobs_config_json_reads_the_run_and_rebuilds_the_same_job(tokenizer_dir, tmp_path, run):
    from tunebench.stages.train import job as tb_job

    config = tiny_config(tokenizer_dir, seeds=[7])
    job = resolved(config, run, tmp_path / run, write_data(tmp_path / "data"))
    written = json.loads(json.dumps(job.to_dict()))
    launched = ("launcher",) if run == "full" else ()  # full fine-tuning always runs under its launcher
    assert tuple(written) == CONFIG_JSON + launched
    spec = job.spec
    assert [written[key] for key in ("task", "model", "method", "run", "format", "stage")] == [
        spec.task,
        spec.model,
        spec.method,
        spec.run,
        spec.format,
        spec.stage,
    ]
    assert written["seed"] == spec.training["seed"] == (7 if run == "lora-seed7" else 42)
    assert written["training"]["dtype_requested"] == "float32" and written["init_from"] is None
    # The job's own fields, read back from config.json beside its run, give the same document.
    own = {key: written[key] for key in written if key not in (*CONFIG_JSON[:7], "init_from")}
    assert tb_job.Job(spec=spec, definition=job.definition, **own).to_dict() == written
