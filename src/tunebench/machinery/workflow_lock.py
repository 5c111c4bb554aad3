"""Clear the lock a killed Snakemake run leaves behind, but only when no Snakemake runs there now.

A SIGKILLed (or power-cut) run cannot remove ``.snakemake/locks/``, and the next run then stops with
"Directory cannot be locked" until someone runs ``snakemake --unlock``. ``make demo`` calls

    python -m tunebench.machinery.workflow_lock -- SNAKEMAKE-ARGS

first: when the working directory holds locks and no live Snakemake process works in it, this runs
``snakemake SNAKEMAKE-ARGS --unlock`` (Snakemake's own way to drop the lock); when one does, it stops
with one sentence saying so, since the lock then protects that run. Without ``/proc`` (not Linux)
it cannot tell, and prints the exact command to run instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def workdir(args: list[str]) -> Path:
    """The directory Snakemake works in: ``--directory``/``-d`` if given, else the current one."""
    for i, arg in enumerate(args):
        if arg in ("--directory", "-d") and i + 1 < len(args):
            return Path(args[i + 1]).resolve()
        if arg.startswith("--directory="):
            return Path(arg.split("=", 1)[1]).resolve()
    return Path.cwd().resolve()


def lock_files(directory: Path) -> list[Path]:
    locks = Path(directory) / ".snakemake" / "locks"
    return sorted(locks.iterdir()) if locks.is_dir() else []


def _is_snakemake(argv: list[str]) -> bool:
    """``snakemake ...``, ``python .../bin/snakemake ...`` or ``python -m snakemake ...``."""
    names = [os.path.basename(arg) for arg in argv[:2]]
    return "snakemake" in names or any(argv[i : i + 2] == ["-m", "snakemake"] for i in range(len(argv)))


def running_snakemake(directory: Path) -> list[int] | None:
    """Ids of live Snakemake processes whose working directory is ``directory``; None without /proc."""
    proc = Path("/proc")
    if not (proc / "self" / "cmdline").is_file():
        return None
    directory = Path(directory).resolve()
    own = {os.getpid(), os.getppid()}
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone meanwhile, or another user's process: it cannot hold our lock's directory
            continue
        if argv and _is_snakemake(argv) and cwd == directory:
            found.append(int(entry.name))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    directory = workdir(args)
    locks = lock_files(directory)
    if not locks:
        return 0
    unlock = [sys.executable, "-m", "snakemake", *args, "--unlock"]
    running = running_snakemake(directory)
    if running is None:
        print(
            f"tunebench: {directory} is locked by a Snakemake run; if none is running any more, run "
            f"`{' '.join(unlock)}` and start again.",
            file=sys.stderr,
        )
        return 2
    if running:
        print(
            f"tunebench: another Snakemake run (process {', '.join(map(str, running))}) is working in {directory}; "
            "wait for it to finish or stop it, then start again.",
            file=sys.stderr,
        )
        return 2
    print(
        f"tunebench: {directory} holds the lock of a Snakemake run that was killed; removing it "
        "(snakemake --unlock) and continuing.",
        file=sys.stderr,
    )
    result = subprocess.run(unlock, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"tunebench: `{' '.join(unlock)}` failed; run it yourself to see why.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
