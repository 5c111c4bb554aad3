"""Shared fixtures: where the repository and the dataset mirror are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tunebench import config as tb_config
from tunebench.config import MIRROR_ENV, ROOT

MIRROR = Path(os.environ.get(MIRROR_ENV) or ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "SOURCES.md").is_file():
        raise RuntimeError(f"the dataset mirror is expected at {MIRROR}; set {MIRROR_ENV} to its directory")
    return MIRROR


@pytest.fixture
def with_mirror(monkeypatch, mirror):
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    return mirror


@pytest.fixture(scope="session")
def small_run_outside(mirror, tmp_path_factory) -> Path:
    """The small config of the SLURM test (container_support.small_config) run outside the image, once a
    session: the metrics its SLURM jobs in the image must reproduce."""
    from container_support import run_small_config_outside

    return run_small_config_outside(tmp_path_factory.mktemp("small-outside"), mirror)


@pytest.fixture(scope="session")
def tiny_run_outside(mirror, tmp_path_factory):
    """The tiny config's whole workflow, outside any image and without TeX, once a session (workflow_support)."""
    from workflow_support import run_tiny_without_tex

    return run_tiny_without_tex(tmp_path_factory.mktemp("tiny-outside"), mirror)


@pytest.fixture(scope="session")
def demo_config():
    return tb_config.load(ROOT / "config" / "demo.yaml")


@pytest.fixture(scope="session")
def paper_config():
    return tb_config.load(ROOT / "config" / "config.yaml")


def pytest_terminal_summary(terminalreporter):
    """The CPU facts and 4-bit kernel path every result of this session depends on (printed even with -q)."""
    from tunebench.util import hardware

    facts = hardware.describe()
    flags = ", ".join(f"{name}={'yes' if present else 'no'}" for name, present in facts["cpu_flags"].items())
    terminalreporter.write_sep("-", "tunebench hardware")
    terminalreporter.write_line(f"{facts['cpu']}; {flags}; torch CPU capability {facts['torch_cpu_capability']}")
    terminalreporter.write_line(
        f"bitsandbytes {facts.get('bitsandbytes')}: CPU 4-bit inference kernel {facts.get('bnb_cpu_4bit_kernel')} "
        f"({hardware.BNB_CPU_KERNEL_ENV}={hardware.bnb_cpu_kernel_choice()})"
    )
    image = getattr(sys.modules.get("container_support"), "BUILT", None)
    if image:  # how long the suite's image took this session (0 s when an image of the same inputs was there)
        size = f"{image['bytes'] / 1e9:.2f} GB" if image["bytes"] else "size unknown"
        terminalreporter.write_line(f"image {image['tag']}: {image['seconds']:.0f} s to build or find, {size}")
