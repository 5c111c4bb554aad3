"""The whole workflow on the tiny config: data → train → evaluate → results → report → paper."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_tiny_workflow_end_to_end(repo_root, with_mirror, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    common = ["-s", str(repo_root / "Snakefile"), "--directory", str(tmp_path),
              "--configfile", str(repo_root / ".test" / "config.yaml")]
    run = subprocess.run([str(BIN / "snakemake"), *common, "--cores", "2"],
                         capture_output=True, text=True, env=env, timeout=1500)
    assert run.returncode == 0, run.stderr[-4000:]
    report = subprocess.run([str(BIN / "snakemake"), *common, "--report", "results/report.html"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert report.returncode == 0, report.stderr[-4000:]

    results = tmp_path / "results"
    with open(results / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    runs = {(row["task"], row["run"]) for row in rows}
    for task in ("viggo", "sql", "gsm8k", "multiplication"):
        assert (task, "baseline") in runs and (task, "lora") in runs
    assert ("gsm8k", "lora-two_stage") in runs and ("viggo", "lora-instruction") in runs
    assert {("viggo", "full"), ("viggo", "qlora"), ("multiplication", "baseline-stepwise")} <= runs
    for row in rows:
        value = float(row["value"]) if row["value"] not in ("", "nan") else None
        if value is not None:
            assert 0.0 <= float(row["ci_low"]) <= value <= float(row["ci_high"]) <= 1.0

    best = json.loads((results / "train" / "viggo" / "tiny-llama" / "full" / "best.json").read_text())
    assert best["epoch"] in (1, 2)
    assert (results / "tables" / "main.md").is_file() and (results / "tables" / "main.tex").is_file()
    assert list((results / "figures").glob("*.png")) and list((results / "figures").glob("*.pdf"))
    assert (results / "paper" / "tunebench.pdf").read_bytes().startswith(b"%PDF")
    assert "metrics.csv" not in report.stderr  # the report was built without missing-file errors
    assert (results / "report.html").stat().st_size > 10_000
