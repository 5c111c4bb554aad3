"""``tunebench run CONFIG``: the whole workflow of any config from one command, in the config's folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunebench import config as tb_config

TINY = tb_config.ROOT / ".test" / "config.yaml"
MATHQA_EXAMPLE = tb_config.ROOT / "examples" / "mathqa_choice" / "config.yaml"


def _tunebench(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tunebench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )


def test_a_dry_run_lists_the_jobs_of_the_config_in_its_folder(tmp_path, mirror):
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(TINY, folder / "config.yaml")
    done = _tunebench("run", "mine/config.yaml", "-n", "--cores", "1", cwd=tmp_path, TUNEBENCH_DATA_MIRROR=str(mirror))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data_viggo" in done.stdout and "train" in done.stdout and "dry-run" in done.stdout
    assert not (folder / "results" / "metrics.csv").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("config, line", [(TINY, 5), (MATHQA_EXAMPLE, 7)], ids=["tiny", "mathqa_example"])
def test_a_yaml_error_is_one_sentence_with_file_and_line(tmp_path, config, line):
    bad = tmp_path / "config.yaml"
    bad.write_text(config.read_text().replace("seed: 42", "seed: [42"))
    done = _tunebench("run", str(bad), "-n", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"tunebench run: error: config file {bad} line {line}, column 5 is not valid YAML: expected ',' or ']', "
        "but got ':'."
    ]
    assert not (tmp_path / "results").exists() and not (tmp_path / ".snakemake").exists()


def test_a_failed_job_shows_its_one_sentence_reason_in_the_console(tmp_path):
    shutil.copy(TINY, tmp_path / "config.yaml")
    (tmp_path / "empty").mkdir()
    done = _tunebench("run", "config.yaml", "--cores", "1", cwd=tmp_path, TUNEBENCH_DATA_MIRROR=str(tmp_path / "empty"))
    assert done.returncode != 0
    reason = [line for line in done.stdout.splitlines() if line.startswith("failed job: ")]
    assert len(reason) == 1, done.stdout[-3000:]
    assert reason[0].startswith("failed job: results/logs/data/")
    assert f"error: the data mirror {tmp_path / 'empty'} has no " in reason[0]
    assert "workflow of config.yaml: failed in" in done.stdout
