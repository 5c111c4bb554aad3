"""Which code made an output: a hash of the source files each stage runs, and the package's version.

Each stage's settings digest (:mod:`tunebench.config.digests`) includes the hash of its own source files,
so that editing a scorer re-scores that task, editing the decoder regenerates, and so on. The raw bytes are
hashed: an edit to a comment or a docstring re-runs the stage too, which is cheap to explain and never
misses a change that matters. Nothing is imported: the files are read where the package lies, so the
workflow can hash them while it parses.

``TUNEBENCH_CODE_ROOT`` names another directory laid out like the package (``stages/generate.py``, ...)
whose files are hashed instead; tests point it at an edited copy rather than editing the package.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import tunebench

CODE_ROOT_ENV = "TUNEBENCH_CODE_ROOT"
PACKAGE = Path(tunebench.__file__).resolve().parent

#: What each stage runs besides its task's own modules, as paths inside the package (a folder: its .py files).
DATA = ("tasks/base.py", "tasks/data.py", "tasks/overlap.py", "stages/dataset.py")
TRAIN = ("stages/train", "stages/formats.py", "stages/models.py")
GENERATE = (
    "stages/generate.py",
    "stages/models.py",
    "stages/formats.py",
    "stages/evaluate.py",
    "stages/evaluate_api.py",
    "stages/api.py",
)
SCORE = ("stages/score.py", "util/stats.py")


def root() -> Path:
    return Path(os.environ.get(CODE_ROOT_ENV) or PACKAGE)


def module_path(module: str) -> str:
    """``tunebench.tasks.viggo`` as a path inside the package (``tasks/viggo.py``); a module outside the package
    (a task registered by a plugin) as its file's absolute path, which no code root replaces."""
    parts = module.split(".")
    if parts[0] == "tunebench":
        return "/".join(parts[1:]) + ".py"
    return str(Path(sys.modules[module].__file__).resolve())


@functools.cache
def _hash(base: Path, paths: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in paths:
        where = base / name
        files = sorted(where.rglob("*.py")) if where.is_dir() else [where]
        for path in files:
            digest.update(str(path.relative_to(base) if path.is_relative_to(base) else path).encode() + b"\0")
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"(missing)")  # the digest still differs from any existing file's
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def source_hash(paths: tuple[str, ...] | list[str]) -> str:
    """A 16-hex-digit sha256 over the named files (package paths), in a fixed order."""
    return _hash(root(), tuple(sorted(set(paths))))


@functools.lru_cache(maxsize=1)
def _git_describe() -> str | None:
    """``git describe`` of the checkout the package lies in; None for an installed package or an image without git."""
    if not (PACKAGE.parents[1] / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=PACKAGE.parents[1],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def provenance(**hashes: str) -> dict:
    """What outputs record beside their digest: the stages' code hashes, the version and ``git describe``."""
    return {**hashes, "version": tunebench.__version__, "git_describe": _git_describe()}
