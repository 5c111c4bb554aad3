"""The Python sources lint and format clean under ruff (pyproject.toml's settings), as `make lint` checks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

RUFF = Path(sys.executable).parent / "ruff"


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_ruff_is_clean(repo_root, command):
    result = subprocess.run([str(RUFF), *command], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_make_lint_runs_every_linter(repo_root):
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", (repo_root / "Makefile").read_text(), re.M).group(1)
    for tool in ("snakemake --lint", "snakefmt --check", "ruff check", "ruff format --check"):
        assert f"$(BIN)/{tool}" in recipe, tool
