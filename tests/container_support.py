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
from pathlib import Path

from tunebench.config import ROOT

#: podman's settings for hosts where its default runtime cannot start containers (see the file).
ENGINE_ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "scripts" / "podman-containers.conf")}


def engine() -> str:
    found = shutil.which("podman") or shutil.which("docker")
    if not found:
        raise RuntimeError("the container tests need podman or docker; .ci/run installs podman")
    return found


@functools.cache
def suite_image() -> str:
    """The tag of the CPU-torch image of this checkout, built if it is not there yet."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-image.sh"), "requirements.lock", "local"],
        capture_output=True,
        text=True,
        env=ENGINE_ENV,
        timeout=3000,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-image.sh failed:\n{result.stderr[-4000:]}")
    return result.stdout.split()[-1]


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
    "train_tokens_per_s",
    "peak_memory_mb",
    "device_hours",
    "device_hours_total",
    "eval_wall_time_s",
    "eval_tokens_per_s",
)


def metrics(path: Path) -> list[dict]:
    """The rows of a metrics.csv without the measured columns, in a fixed order: what two runs must share."""
    with open(path) as handle:
        rows = [{k: v for k, v in row.items() if k not in MEASURED} for row in csv.DictReader(handle)]
    return sorted(rows, key=lambda row: tuple(row.values()))
