"""The workflow itself: dry runs of both configs, lint, formatting and config errors before any job."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent


def snakemake(repo_root, *args, env=None, cwd=None):
    return subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=cwd or repo_root,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def dry_run(repo_root, workdir, config):
    """A dry run of the repository's workflow in ``workdir``, which holds no results: the test sees the
    whole matrix whatever the checkout's own results/ holds (a finished demo leaves nothing to schedule)."""
    return snakemake(repo_root, "-n", "--quiet", "rules", "-s", str(repo_root / "Snakefile"),
                     "--configfile", str(repo_root / config), "--directory", str(workdir), cwd=workdir)


def _job_counts(stdout: str) -> dict[str, int]:
    """Rule -> job count from the table a dry run prints."""
    counts = {}
    in_table = False
    for line in stdout.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
            if match and match.group(1) != "total":
                counts[match.group(1)] = int(match.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


def test_dry_run_lists_the_paper_matrix(repo_root, tmp_path):
    result = dry_run(repo_root, tmp_path, "config/config.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = _job_counts(result.stdout)
    # 3 tasks × 3 sizes × 3 methods + multiplication (7B × 3) + MathQA stage + two-stage + ablation
    assert counts["train"] == 27 + 3 + 1 + 1 + 1
    assert counts["evaluate"] == (27 + 3 + 1 + 1) + 3 * 3 + 3 * 2
    assert sum(v for k, v in counts.items() if k.startswith("data_")) == 5


def test_dry_run_of_the_demo(repo_root, tmp_path):
    result = dry_run(repo_root, tmp_path, "config/demo.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = _job_counts(result.stdout)
    assert counts["train"] == 11
    assert counts["evaluate"] == 10 + 5


def test_lint_is_clean(repo_root):
    result = snakemake(repo_root, "--lint", "--configfile", "config/demo.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_snakefmt_clean(repo_root):
    files = ["Snakefile", *sorted(str(p.relative_to(repo_root)) for p in (repo_root / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_bad_config_stops_before_any_job_with_one_sentence(repo_root, tmp_path):
    cfg = yaml.safe_load((repo_root / "config" / "demo.yaml").read_text())
    cfg["methods"]["lora"]["learning_rate"] = -1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    result = snakemake(repo_root, "-n", "-s", str(repo_root / "Snakefile"), "--configfile", str(bad),
                       "--directory", str(tmp_path), cwd=tmp_path)
    assert result.returncode != 0
    assert "methods.lora.learning_rate" in result.stderr
    assert "Traceback" not in result.stderr
