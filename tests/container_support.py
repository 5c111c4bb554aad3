"""The suite's image for the tests that run it: built once per session by scripts/build-image.sh.

The CPU-torch variant (requirements.lock) on a base made from this machine's Debian archive
(scripts/base-image.sh), since CI machines reach no container registry and have no GPU. The tag names
every input of the build, so a second session on the same machine reuses the image; a fresh machine
builds it (about 12 minutes on 2 cores). Needs root, podman (or docker) and mmdebstrap: .ci/run installs them.
"""

from __future__ import annotations

import csv
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tunebench.config import MIRROR_ENV, ROOT

BIN = Path(sys.executable).parent

#: podman's settings for hosts where its default runtime cannot start containers (see the file).
ENGINE_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "scripts" / "podman-containers.conf")}


def engine() -> str:
    found = shutil.which("podman") or shutil.which("docker")
    if not found:
        raise RuntimeError("the container tests need podman or docker; .ci/run installs podman")
    return found


#: What suite_image found or built this session, for the terminal summary (tests/conftest.py).
BUILT: dict = {}


@functools.cache
def suite_image() -> str:
    """The tag of the CPU-torch image of this checkout, built if it is not there yet."""
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-image.sh"), "requirements.lock", "local"],
        capture_output=True,
        text=True,
        env=ENGINE_ENV,
        timeout=3000,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-image.sh failed:\n{result.stderr[-4000:]}")
    tag = result.stdout.split()[-1]
    size = subprocess.run(
        [engine(), "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True, env=ENGINE_ENV
    ).stdout.strip()
    BUILT.update(tag=tag, seconds=time.monotonic() - started, bytes=int(size) if size.isdigit() else None)
    return tag


def run_in_image(image: str, *command: str, options: tuple[str, ...] = (), timeout: float = 600):
    """``podman run --rm --network none`` of ``command`` in ``image``: no network, as on a compute node."""
    return subprocess.run(
        [engine(), "run", "--rm", "--network", "none", *options, image, *command],
        capture_output=True,
        text=True,
        env=ENGINE_ENV,
        timeout=timeout,
    )


# metrics.csv columns that measure the run (time, speed, memory) rather than its results.
MEASURED = (
    "train_wall_time_s",
    "train_cpu_time_s",
    "train_tokens_per_s",
    "peak_memory_mb",
    "device_hours",
    "device_hours_total",
    "train_wall_time_s_total",
    "eval_wall_time_s",
    "eval_tokens_per_s",
)


def metrics(path: Path) -> list[dict]:
    """The rows of a metrics.csv without the measured columns, in a fixed order: what two runs must share."""
    with open(path) as handle:
        rows = [{k: v for k, v in row.items() if k not in MEASURED} for row in csv.DictReader(handle)]
    return sorted(rows, key=lambda row: tuple(row.values()))


#: The resources of full fine-tuning in the small config on one node: 2 processes (ZeRO-3 over gloo).
ONE_NODE = {"threads": 2, "mem_mb": 3000, "processes": 2}


def small_config(full_row: dict) -> dict:
    """.test/config.yaml restricted to ViGGO: the prompted baseline, LoRA and full fine-tuning with the
    resources ``full_row``; rows padded per batch so that its 32 rows in batches of 4 on 2 processes make
    4 optimizer steps an epoch, with a resume state after each."""
    config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    config["experiments"] = {
        "finetune": [{"task": "viggo", "models": ["tiny-llama"], "methods": ["lora", "full"]}],
        "baselines": [{"task": "viggo", "models": ["tiny-llama"]}],
    }
    config["training"].update(batching="pad_to_longest", checkpoint_every_steps=1)
    config["resources"] = {
        "default": {"threads": 1, "mem_mb": 1500, "runtime": 20, "gpu": 0},
        "train": {"tiny": {"full": {"runtime": 20, **full_row}}},
        "evaluate": {"tiny": {"threads": 1, "mem_mb": 1500, "runtime": 20}},
    }
    return config


def snakemake_command(workdir: Path, config: dict, target: str, *options: str) -> list[str]:
    """Snakemake on the repository's workflow in ``workdir``, with ``config`` written there."""
    path = workdir / "config.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    # The target comes first: --configfile and --rerun-triggers take every value that follows them.
    return [
        str(BIN / "snakemake"),
        target,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(path),
        *options,
    ]


def run_small_config_outside(workdir: Path, mirror: Path) -> Path:
    """results/metrics.csv of small_config(ONE_NODE) run here, outside any image, on 2 cores."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", MIRROR_ENV: str(mirror)}
    run = subprocess.run(
        snakemake_command(workdir, small_config(ONE_NODE), "results/metrics.csv", "--cores", "2"),
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return workdir / "results" / "metrics.csv"
