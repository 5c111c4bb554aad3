"""The whole workflow on the tiny config: data → train → evaluate → results → report → paper."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_tiny_workflow_end_to_end(tiny_run_outside):
    """First without TeX (everything but the PDF, the report and the summary's hint), then with it (the PDF alone)."""
    if shutil.which("latexmk") is None or shutil.which("pdflatex") is None:
        pytest.fail(
            "latexmk and pdflatex are needed for the paper half of this test; .ci/run installs apt-packages.txt"
        )
    common, work, no_tex, run = (
        tiny_run_outside.common,
        tiny_run_outside.work,
        tiny_run_outside.no_tex,
        tiny_run_outside.run,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "latexmk and pdflatex not found" in run.stderr
    results = work / "results"
    assert (results / "tables" / "main.tex").is_file() and not (results / "paper" / "tunebench.pdf").exists()
    report = subprocess.run(
        [str(BIN / "snakemake"), *common, "--report", "results/report.html"],
        capture_output=True,
        text=True,
        env=no_tex,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-4000:]
    summary = subprocess.run(
        [str(BIN / "tunebench"), "summary", "--results", str(results)],
        capture_output=True,
        text=True,
        env=no_tex,
        timeout=120,
    )
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert f"report: {results / 'report.html'}\n" in summary.stdout
    assert "The paper PDF was not built: latexmk and pdflatex not found; install LaTeX with" in summary.stdout

    env = {**no_tex, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    with_tex = subprocess.run(
        [str(BIN / "snakemake"), *common, "--cores", "2"], capture_output=True, text=True, env=env, timeout=600
    )
    assert with_tex.returncode == 0, with_tex.stderr[-4000:]
    assert re.search(r"^paper\s+1$", with_tex.stdout + with_tex.stderr, re.M)  # only the paper was left to do
    assert not re.search(r"^(train|generate|score)\s+\d+$", with_tex.stdout + with_tex.stderr, re.M)
    report = subprocess.run(
        [str(BIN / "snakemake"), *common, "--report", "results/report.html"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-4000:]

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


@pytest.mark.slow
def test_the_tiny_workflow_without_tracking_writes_no_tracker_files_and_its_logs_carry_no_known_noise(
    tiny_run_outside,
):
    from tunebench.util import quiet

    assert tiny_run_outside.run.returncode == 0, tiny_run_outside.run.stderr[-4000:]
    work = tiny_run_outside.work
    assert not list(work.rglob("mlruns")) and not list(work.rglob("*tfevents*"))
    logs = list((work / "results" / "logs").rglob("*.log"))
    assert any("lora" in log.name for log in logs) and any("qlora" in log.name for log in logs)
    known = [*quiet.LOG_MESSAGES.values(), *(start for _, start in quiet.WARNINGS)]
    for log in logs:
        text = log.read_text(errors="replace")
        assert not [message for message in known if message in text], log
