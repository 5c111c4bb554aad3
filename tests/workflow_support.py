"""The tiny config's whole workflow run once a session outside any image, without TeX: test_end_to_end goes on
from it (report, summary, then the paper with TeX) and the container test compares the image's run with it."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tunebench.config import MIRROR_ENV, ROOT

BIN = Path(sys.executable).parent


def path_without_tex(tmp_path: Path) -> str:
    """A PATH on which every program of the current PATH is found except latexmk and pdflatex."""
    farm = tmp_path / "bin-without-tex"
    farm.mkdir()
    for directory in reversed(os.environ["PATH"].split(os.pathsep)):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else []:
            if program.name not in ("latexmk", "pdflatex") and program.is_file():
                (farm / program.name).unlink(missing_ok=True)
                (farm / program.name).symlink_to(program)
    return f"{BIN}{os.pathsep}{farm}"


@dataclass(frozen=True)
class TinyRun:
    common: list[str]  # snakemake's arguments naming the Snakefile, the directory and the config
    work: Path
    no_tex: dict  # the environment the run had: no latexmk or pdflatex on PATH
    run: subprocess.CompletedProcess


def run_tiny_without_tex(tmp_path: Path, mirror: Path) -> TinyRun:
    work = tmp_path / "work"
    common = [
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(ROOT / ".test" / "config.yaml"),
    ]
    no_tex = {**os.environ, "PATH": path_without_tex(tmp_path), MIRROR_ENV: str(mirror)}
    run = subprocess.run(
        [str(BIN / "snakemake"), *common, "--cores", "2"], capture_output=True, text=True, env=no_tex, timeout=1500
    )
    return TinyRun(common, work, no_tex, run)
