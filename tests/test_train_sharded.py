"""LoRA sharded with DeepSpeed ZeRO-3 (config/accelerate/zero3_lora.yaml: how 13B/70B LoRA run), on two GPUs.

GPU only: under ZeRO-3 peft gathers the trainable token rows on ``torch.cuda.current_device()``, so the
sharded LoRA path cannot run on CPU processes (full fine-tuning's ZeRO-3 can, see test_train_methods).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from train_support import run_cli, tiny_config, tokenizer_dir, write_config, write_data  # noqa: F401


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="sharded LoRA (ZeRO-3 under peft) needs two CUDA GPUs")
def test_lora_under_zero3_trains_on_two_gpus_and_exports_the_whole_adapter(tokenizer_dir, tmp_path):
    config = tiny_config(tokenizer_dir, methods=["lora"])
    config["methods"]["lora"]["accelerate_config"] = "zero3_lora"
    config["resources"]["train"]["tiny"]["lora"] = {"gpu": 2}
    config_path = write_config(tmp_path / "config.yaml", config)
    out = tmp_path / "lora"
    result = run_cli(config_path, "lora", out, write_data(tmp_path / "data"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--num_processes 2" in result.stderr  # the launch line is in the log
    run = json.loads((out / "run.json").read_text())
    assert run["num_processes"] == 2 and run["distributed"]["zero_stage"] == 3
    adapter = load_file(out / "checkpoint" / "adapter_model.safetensors")
    # ZeRO-3 partitions every weight; the export gathers them, so no adapter matrix comes out empty.
    lora_a = [tensor for name, tensor in adapter.items() if "lora_A" in name]
    assert lora_a and all(tensor.shape[0] == 4 and tensor.numel() > 0 for tensor in lora_a)
