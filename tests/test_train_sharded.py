"""LoRA sharded with DeepSpeed ZeRO-3, as 13B/70B LoRA run, proven on two CPU processes over gloo.

The paper's sharded LoRA runs train the new marker rows through PEFT's ``trainable_token_indices`` on an
untied output layer with gradient checkpointing on; this is that path with zero3_cpu's DeepSpeed file
in place of zero3_lora's (the same ZeRO-3 stage, gloo instead of NCCL, the optimizer on the CPU).
"""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from train_support import (  # noqa: F401
    TINY_LLAMA,
    cli_command,
    kill_when_saved,
    read_history,
    run_cli,
    tiny_config,
    tokenizer_dir,
    validation_loss,
    write_config,
    write_data,
)


@pytest.mark.slow
def test_lora_with_marker_rows_under_zero3_resumes_after_a_kill_and_loads_with_stock_peft(tokenizer_dir, tmp_path):
    from peft import PeftModel

    from tunebench.stages import models

    # 8 rows, batch 4 on 2 processes: one step an epoch, two epochs; the kill lands after epoch 1's state.
    config = tiny_config(tokenizer_dir, training={"epochs": 2, "gradient_checkpointing": True}, methods=["lora"])
    config["methods"]["lora"]["accelerate_config"] = "zero3_cpu"
    config["resources"]["train"]["tiny"]["lora"] = {"processes": 2}
    assert config["lora_presets"]["tiny"]["train_new_token_rows"]
    config_path = write_config(tmp_path / "config.yaml", config)
    data = write_data(tmp_path / "data")
    out = tmp_path / "lora"
    kill_when_saved(cli_command(config_path, "lora", out, data), tmp_path / "lora.resume", "-e002s000000")
    assert not (out / "best.json").exists()
    result = run_cli(config_path, "lora", out, data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--num_processes 2" in result.stderr and "resuming at epoch 2, step 0" in result.stderr

    run = json.loads((out / "run.json").read_text())
    assert run["num_processes"] == 2 and run["distributed"]["zero_stage"] == 3 and run["epochs_run"] == 2
    assert [h["epoch"] for h in read_history(out) if h["kind"] == "epoch"] == [1, 2]
    adapter = load_file(out / "checkpoint" / "adapter_model.safetensors")
    # ZeRO-3 partitions every weight; the export gathers them: whole LoRA matrices and both marker row blocks.
    assert all(t.shape[0] == 4 and t.numel() > 0 for name, t in adapter.items() if "lora_A" in name)
    rows = {
        name.split(".token_adapter")[0].rsplit(".", 1)[-1]: t for name, t in adapter.items() if "token_adapter" in name
    }
    assert set(rows) == {"embed_tokens", "lm_head"} and all(t.shape == (4, 64) for t in rows.values())

    # Stock PEFT on the same base gives the validation loss the sharded model reported for its best epoch.
    tokenizer = models.load_tokenizer({"local": str(out / "checkpoint")})
    base = models.random_llama(TINY_LLAMA, models.load_tokenizer({"local": str(tokenizer_dir)}))
    assert not base.config.tie_word_embeddings
    base.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base, out / "checkpoint")
    best = json.loads((out / "best.json").read_text())
    assert best["epoch"] == 2
    assert validation_loss(model, tokenizer, data) == pytest.approx(best["validation_loss"], abs=1e-5)
