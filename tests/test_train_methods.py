"""Each method for two optimizer steps on a tiny random Llama on CPU, with its first losses pinned.

The pinned values are what this code computes for the seeded model and data; a change in batching,
masking, loss normalisation, initialisation or optimisation shows up as a different number.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train_support import (  # noqa: F401
    read_history,
    resolved,
    run_cli,
    step_losses,
    tiny_config,
    tokenizer_dir,
    train_in_process,
    validation_loss,
    write_config,
    write_data,
)
from tunebench.commands import train as train_command
from tunebench.stages import formats, models
from tunebench.stages.train import wrap
from tunebench.util.errors import ConfigError


def _check_outputs(out_dir, method: str, processes: int = 1) -> dict:
    run = json.loads((out_dir / "run.json").read_text())
    best = json.loads((out_dir / "best.json").read_text())
    assert run["method"] == method and run["num_processes"] == processes and run["device"] == "cpu"
    assert run["epochs_run"] == 1 and best["epoch"] == 1 and best["checkpoint"] == "checkpoint"
    assert best["validation_perplexity"] == pytest.approx(torch.tensor(best["validation_loss"]).exp().item(), rel=1e-6)
    epoch = [h for h in read_history(out_dir) if h["kind"] == "epoch"]
    assert len(epoch) == 1 and epoch[0]["peak_memory_mb"] > 0 and epoch[0]["tokens_per_s"] > 0
    assert run["cpu_time_s"] > 0  # the processes' CPU time over the steps (a CPU-hour of the cost table)
    settings = json.loads((out_dir / "config.json").read_text())
    assert settings["method"] == method
    # the digest the workflow's stamp and param carry, recorded for the results stage's check
    assert len(run["settings_hash"]) == 16 and run["settings_hash"] == settings["settings_hash"]
    meta = json.loads((out_dir / "checkpoint" / models.CHECKPOINT_META).read_text())
    assert meta["method"] == method and meta["added_tokens"] == list(formats.SPECIAL_TOKENS)
    assert not (out_dir.parent / f"{out_dir.name}.resume").exists()  # removed once the outputs are written
    return run


def test_lora_two_steps(tokenizer_dir, tmp_path):
    config = tiny_config(tokenizer_dir, training={"batch_size": 8}, methods=["lora"])
    out = tmp_path / "lora"
    train_in_process(config, "lora", out, write_data(tmp_path / "data", train=16))
    assert step_losses(out) == [10.7822, 10.6949]
    run = _check_outputs(out, "lora")
    assert run["optimizer"] == "AdamW (fused)"
    assert 0 < run["trainable_params"] < run["total_params"] / 100
    assert (out / "checkpoint" / "adapter_model.safetensors").is_file()


def test_dora_is_one_method_module_that_trains_magnitudes_beside_the_adapters(tokenizer_dir, tmp_path):
    """DoRA starts where LoRA starts (its update is zero at first, so the first loss is LoRA's) and then
    trains a magnitude per output feature as well, so the second step differs; it exports an adapter
    that PEFT reloads as DoRA, and the results name, colour and order it from the same module."""
    from tunebench import results
    from tunebench.results import figures, labels
    from tunebench.stages.train import methods

    config = tiny_config(tokenizer_dir, training={"batch_size": 8}, methods=["dora"])
    out = tmp_path / "dora"
    data = write_data(tmp_path / "data", train=16)
    built = wrap.build(resolved(config, "dora", out, data), torch.device("cpu"))
    trained = [name for name, p in built.model.named_parameters() if p.requires_grad]
    magnitudes = [name for name in trained if "lora_magnitude_vector" in name]
    assert magnitudes and len(magnitudes) == sum(1 for name in trained if "lora_A" in name)
    train_in_process(config, "dora", out, data)
    losses = step_losses(out)
    assert losses[0] == 10.7822 and losses[1] != 10.6949  # LoRA's two losses (test_lora_two_steps)
    _check_outputs(out, "dora")
    adapter = json.loads((out / "checkpoint" / "adapter_config.json").read_text())
    assert adapter["use_dora"] is True
    assert methods.names() == ("full", "lora", "qlora", "dora") and results.METHODS == methods.names()
    assert labels.method("dora") == "DoRA" and figures.method_colors()["dora"] not in (
        figures.method_colors()[m] for m in ("full", "lora", "qlora")
    )


def test_lora_frozen_weights_held_in_bfloat16_change_nothing_under_autocast(tokenizer_dir, tmp_path, monkeypatch):
    """Autocast computes the base layers in bfloat16 either way: holding their frozen weights in bfloat16
    (one cast at build time instead of one per forward) must give the very same steps."""
    config = tiny_config(tokenizer_dir, training={"batch_size": 8, "dtype": "bfloat16_autocast"}, methods=["lora"])
    data = write_data(tmp_path / "data", train=16)
    train_in_process(config, "lora", tmp_path / "cast_once", data)
    monkeypatch.setattr(wrap, "frozen_linears_to", lambda model, dtype: None)
    train_in_process(config, "lora", tmp_path / "cast_each_call", data)
    losses = [
        [h["loss"] for h in read_history(tmp_path / name) if h["kind"] == "step"]
        for name in ("cast_once", "cast_each_call")
    ]
    assert len(losses[0]) == 2 and losses[0] == losses[1]


def test_frozen_linears_to_casts_only_the_frozen_base_layers(tokenizer_dir, tmp_path):
    config = tiny_config(tokenizer_dir, training={"dtype": "bfloat16_autocast"}, methods=["lora"])
    job = resolved(config, "lora", tmp_path / "out", write_data(tmp_path / "data", train=4))
    model = wrap.build(job, torch.device("cpu")).model
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}  # adapters train in float32
    adapted = [
        n
        for n in dtypes
        if n.endswith(("q_proj.base_layer.weight", "v_proj.base_layer.weight", "down_proj.base_layer.weight"))
    ]
    assert adapted and {dtypes[n] for n in adapted} == {torch.bfloat16}
    assert all(d == torch.float32 for n, d in dtypes.items() if n not in adapted)  # embeddings, norms, other layers


def test_qlora_two_steps_on_4bit_linear_layers(tokenizer_dir, tmp_path):
    import bitsandbytes as bnb

    config = tiny_config(tokenizer_dir, training={"batch_size": 8}, methods=["qlora"])
    data = write_data(tmp_path / "data", train=16)
    out = tmp_path / "qlora"
    built = wrap.build(resolved(config, "qlora", out, data), torch.device("cpu"))
    linear = {
        name: type(module)
        for name, module in built.model.named_modules()
        if name.endswith(("q_proj.base_layer", "k_proj", "o_proj", "up_proj"))
    }
    assert linear and all(kind is bnb.nn.Linear4bit for kind in linear.values())
    weight = built.model.get_submodule("base_model.model.model.layers.0.self_attn.k_proj").weight
    assert weight.dtype == torch.uint8 and weight.quant_type == "nf4"
    del built
    train_in_process(config, "qlora", out, data)
    assert step_losses(out) == [10.7809, 10.6952]
    _check_outputs(out, "qlora")


@pytest.mark.slow
def test_full_two_steps_under_deepspeed_zero3_on_two_cpu_processes(tokenizer_dir, tmp_path):
    config = tiny_config(tokenizer_dir, training={"batch_size": 4}, methods=["full"])
    config_path = write_config(tmp_path / "config.yaml", config)
    out = tmp_path / "full"
    result = run_cli(config_path, "full", out, write_data(tmp_path / "data", train=16))
    assert result.returncode == 0, result.stderr[-3000:]
    # Before the first update the model equals the LoRA run's (LoRA starts as a no-op) and the 2 × 4 rows
    # are the LoRA run's first 8: the token-mean loss over both processes must match it.
    assert step_losses(out) == [10.7822, 10.5664]
    run = _check_outputs(out, "full", processes=2)
    assert run["distributed"] == {
        "type": "deepspeed",
        "zero_stage": 3,
        "offload_optimizer": "cpu",
        "offload_param": "none",
    }
    assert run["trainable_params"] == run["total_params"] and run["optimizer"] == "DeepSpeedCPUAdam"
    assert (out / "checkpoint" / "model.safetensors").is_file()
    # The gathered export, loaded by transformers alone, gives the validation loss the sharded model reported.
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(out / "checkpoint")
    tokenizer = models.load_tokenizer({"local": str(out / "checkpoint")})
    best = json.loads((out / "best.json").read_text())
    assert validation_loss(exported, tokenizer, tmp_path / "data") == pytest.approx(best["validation_loss"], abs=1e-5)


def test_special_token_rows_change_under_lora_and_nothing_else_in_the_embeddings(tokenizer_dir, tmp_path):
    config = tiny_config(tokenizer_dir, training={"batch_size": 8, "epochs": 2}, methods=["lora"])
    data = write_data(tmp_path / "data", train=16)
    out = tmp_path / "lora"
    initial = wrap.build(resolved(config, "lora", out, data), torch.device("cpu"))
    new_ids = initial.new_token_ids
    assert new_ids == initial.tokenizer.convert_tokens_to_ids(list(formats.SPECIAL_TOKENS))
    base = initial.model.get_base_model()
    before_in = base.get_input_embeddings().weight.detach().clone()
    before_out = base.get_output_embeddings().weight.detach().clone()
    assert before_out.data_ptr() != before_in.data_ptr()  # untied: both matrices need their new rows trained

    train_in_process(config, "lora", out, data)
    trained, _ = models.load_for_inference(config, "tiny", checkpoint_dir=out / "checkpoint")
    after_in = trained.get_input_embeddings().weight.detach()
    after_out = trained.get_output_embeddings().weight.detach()
    old = [i for i in range(before_in.shape[0]) if i not in new_ids]
    for before, after in ((before_in, after_in), (before_out, after_out)):
        assert after.shape == before.shape
        assert torch.equal(after[old], before[old])
    moved = lambda before, after: (after[new_ids] - before[new_ids]).abs().amax(dim=1) > 1e-4  # noqa: E731
    # Every new output row is trained (the softmax reaches all of them); the input rows of the three
    # prompt markers are too. <END_A> is only ever the last input token, which predicts nothing.
    assert moved(before_out, after_out).tolist() == [True, True, True, True]
    assert moved(before_in, after_in).tolist() == [True, True, True, False]


def test_the_end_marker_starts_as_the_end_of_sequence_token(tokenizer_dir, tmp_path):  # noqa: F811
    """So that a short run already stops after an answer; the prompt markers keep their mean start.
    (Under ZeRO-3 the same rows are set on gathered weights: the full run's first loss equals LoRA's above.)"""
    config = tiny_config(tokenizer_dir, methods=["lora"])
    built = wrap.build(resolved(config, "lora", tmp_path / "out", write_data(tmp_path / "data")), torch.device("cpu"))
    base = built.model.get_base_model()
    end, eos = built.tokenizer.convert_tokens_to_ids(formats.END_A), built.tokenizer.eos_token_id
    start = built.tokenizer.convert_tokens_to_ids(formats.START_Q)
    for weight in (base.get_input_embeddings().weight, base.get_output_embeddings().weight):
        assert torch.equal(weight[end], weight[eos])
        assert not torch.equal(weight[start], weight[eos])


def test_gpu_only_settings_fail_in_one_sentence_on_this_machine(tokenizer_dir, tmp_path):
    data = write_data(tmp_path / "data")
    flash = tiny_config(tokenizer_dir, training={"attn_implementation": "flash_attention_2"}, methods=["lora"])
    with pytest.raises(ConfigError, match="flash_attention_2, which needs a CUDA GPU"):
        resolved(flash, "lora", tmp_path / "o", data)
    offload = tiny_config(tokenizer_dir, methods=["full"])
    offload["methods"]["full"]["accelerate_config"] = "zero3_offload"
    with pytest.raises(ConfigError, match="zero3_offload', which runs on GPUs"):
        resolved(offload, "full", tmp_path / "o", data)


def test_full_relaunches_through_accelerate_with_the_named_files(tokenizer_dir, tmp_path):
    config = tiny_config(tokenizer_dir, methods=["full", "lora"])
    data = write_data(tmp_path / "data")
    job = resolved(config, "full", tmp_path / "full", data)
    assert job.launch and job.processes == 2
    assert not resolved(config, "lora", tmp_path / "lora", data).launch
    args = train_command.argparse.Namespace(
        config=[tmp_path / "c.yaml"], task="multiplication", model="tiny", run="full"
    )
    command = train_command.launch_command(job, args, tmp_path / "full", data)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1].endswith("config/accelerate/zero3_cpu.yaml")
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[command.index("--deepspeed_config_file") + 1].endswith("config/deepspeed/zero3_cpu.json")
    assert command[command.index("-m", 3) + 1 : command.index("-m", 3) + 3] == ["tunebench.commands.cli", "train"]


def test_two_stage_run_starts_from_the_first_stages_selected_checkpoint(tokenizer_dir, tmp_path):
    from safetensors.torch import load_file

    config = tiny_config(tokenizer_dir, methods=["lora"])
    config["experiments"]["finetune"] = [
        {"task": "mathqa", "models": ["tiny"], "methods": ["lora"], "evaluate": False},
        {"task": "gsm8k", "models": ["tiny"], "methods": ["lora"], "tag": "two_stage", "init_from": {"task": "mathqa"}},
    ]
    data = write_data(tmp_path / "data")
    results = tmp_path / "results" / "train"
    second = results / "gsm8k" / "tiny" / "lora-two_stage"
    with pytest.raises(ConfigError, match="has not finished training"):
        resolved(config, "lora-two_stage", second, data, task="gsm8k")

    train_in_process(config, "lora", results / "mathqa" / "tiny" / "lora", data, task="mathqa")
    job = resolved(config, "lora-two_stage", second, data, task="gsm8k")
    assert job.stage == "two_stage" and job.init_checkpoint == str(results / "mathqa" / "tiny" / "lora" / "checkpoint")
    first = load_file(results / "mathqa" / "tiny" / "lora" / "checkpoint" / "adapter_model.safetensors")
    built = wrap.build(job, torch.device("cpu"))
    start = {name: p.detach() for name, p in built.model.named_parameters() if p.requires_grad}
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    assert first[key].abs().sum() > 0  # trained away from LoRA's zero start
    assert torch.equal(start[key.replace(".weight", ".default.weight")], first[key])
    del built
    train_in_process(config, "lora-two_stage", second, data, task="gsm8k")
    assert json.loads((second / "run.json").read_text())["stage"] == "two_stage"


def test_the_jobs_threads_are_shared_among_its_processes():
    env = train_command.launch_env({"OMP_NUM_THREADS": "8", "PATH": "/bin"}, processes=2)
    assert env["OMP_NUM_THREADS"] == "4" and env[train_command.LAUNCHED_ENV] == "1"
    assert train_command.launch_env({"OMP_NUM_THREADS": "1"}, processes=2)["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in train_command.launch_env({}, processes=2)  # torchrun's default applies
    # The venv's bin (DeepSpeed's ninja) is on the workers' PATH even when the job's PATH lacks it.
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.executable).parent), "/bin"]
    assert train_command.launch_env({}, processes=2)["PATH"] == str(Path(sys.executable).parent)
    # Without a GPU DeepSpeed is told its accelerator rather than left to search for one (and warn).
    assert env.get("DS_ACCELERATOR") == (None if torch.cuda.is_available() else "cpu")


@pytest.mark.slow  # three processes that each import torch and PEFT: about half a minute
def test_adapter_config_is_the_same_bytes_under_any_hash_seed(tokenizer_dir, tmp_path):  # noqa: F811
    """PEFT stores target_modules as a set; the exported adapter_config.json lists them sorted, so two
    identical runs (different PYTHONHASHSEED, as two processes get) write identical files."""
    code = (
        "import sys\nfrom pathlib import Path\nfrom peft import get_peft_model\n"
        "from tunebench.stages import models\nfrom tunebench.stages.train import wrap\n"
        "from train_support import TINY_LLAMA\n"
        "source = {'random_llama': TINY_LLAMA, 'tokenizer': {'local': sys.argv[1]}}\n"
        "tokenizer = models.load_tokenizer(source)\nmodel = models.load_model(source)\n"
        "preset = {'r': 2, 'alpha': 4, 'dropout': 0.0, 'bias': 'none', 'target_modules': "
        "['v_proj', 'q_proj', 'up_proj', 'o_proj', 'k_proj', 'down_proj', 'gate_proj']}\n"
        "peft_model = get_peft_model(model, wrap.lora_config(preset, None))\n"
        "meta = {'method': 'lora', 'new_token_ids': []}\n"
        "wrap.export(peft_model, tokenizer, Path(sys.argv[2]), meta)\n"
    )
    tests_dir = str(Path(__file__).parent)
    written = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"seed{seed}"
        out.mkdir()
        env = dict(
            os.environ,
            PYTHONHASHSEED=seed,
            PYTHONPATH=os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])),
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(tokenizer_dir), str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        written.append((out / "adapter_config.json").read_bytes())
    assert written[0] == written[1] == written[2]
    modules = json.loads(written[0])["target_modules"]
    assert modules == sorted(modules) and len(modules) == 7
