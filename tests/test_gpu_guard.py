"""A job whose resources ask for GPUs stops, in one sentence, on a machine where torch sees none."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from train_support import tiny_config, tokenizer_dir, write_config, write_data  # noqa: F401
from tunebench.util import hardware

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the guard is what a GPU-less node sees")


def _tunebench(*arguments: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "TUNEBENCH_LAUNCHED"}
    return subprocess.run(
        [sys.executable, "-m", "tunebench", *arguments], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture
def gpu_config(tokenizer_dir, tmp_path):
    config = tiny_config(tokenizer_dir, methods=["lora"])
    config["experiments"]["baselines"] = [{"task": "multiplication", "models": ["tiny"]}]
    config["resources"]["train"]["tiny"]["lora"] = {"gpu": 1, "gpu_model": "a100"}
    config["resources"]["evaluate"] = {"tiny": {"gpu": 1, "gpu_model": "a100"}}
    return write_config(tmp_path / "config.yaml", config)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_job_asking_for_a_gpu_stops_before_loading_anything(gpu_config, tmp_path, command):
    data = write_data(tmp_path / "data")
    run = "lora" if command == "train" else "baseline"
    result = _tunebench(
        command,
        *("--config", str(gpu_config), "--task", "multiplication", "--model", "tiny", "--run", run),
        *("--data-dir", str(data), "--out-dir", str(tmp_path / "out")),
    )
    message = result.stderr.strip()
    assert result.returncode == 2, message[-2000:]
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    key = "resources.train.tiny.lora" if command == "train" else "resources.evaluate.tiny"
    assert message.startswith(f"tunebench {command}: error: {key} asks for 1 GPU(s) on each node but ")
    # this machine's torch may be the CPU build or a CUDA build without a GPU; both are named
    assert ("CPU-only build" if torch.version.cuda is None else "CUDA device(s) are visible") in message
    assert "apptainer --nv" in message and f"gpu: 0 in {key}" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("torch_cuda", "driver", "expected"),
    [
        (None, None, "CPU-only build"),
        ("13.0", None, "no NVIDIA driver is loaded here"),
        ("13.0", "535.104.05", "this node's driver is 535.104.05, too old; torch's CUDA 13.0 build needs"),
        ("12.8", "580.65.06", "the driver is 580.65.06; torch's CUDA 12.8 build needs an NVIDIA driver of the 570"),
    ],
)
def test_the_reason_names_the_driver_against_the_torch_build(torch_cuda, driver, expected):
    assert expected in hardware.missing_gpus(1, 0, torch_cuda, driver, "0")
