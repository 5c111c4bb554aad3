"""``tunebench run``: one command for any config: validate it, run the workflow in its folder, summarise."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from .. import config as tb_config
from ..machinery import workflow_lock
from ..util.errors import UserError
from ..util.staging import MIRROR_ENV
from . import summary

# Snakemake's account of a failed job names its log: "    log: logs/x.log (check log file(s) for error details)".
FAILED_LOG = re.compile(r"^\s+log: (.+?) \(check log file")
# The one sentence a tunebench command prints before it exits 2.
COMMAND_ERROR = re.compile(r"^tunebench [\w-]+: (?:error: )?.+")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="validate a config, run its whole workflow and print the summary of its results",
        description=(
            "Validate CONFIG, then run the Snakemake workflow with it in the config's own folder (results/, logs/ "
            "and the report land beside the config), print the one-sentence reason of each failed job, and end "
            "with the summary of that folder's results."
        ),
    )
    parser.add_argument("config", type=Path, metavar="CONFIG", help="the config file of the experiment")
    parser.add_argument("--cores", default="all", help="cores Snakemake may use at once (a number or all)")
    parser.add_argument(
        "--profile", metavar="P", help="a Snakemake profile, e.g. profiles/slurm for a SLURM cluster (default: none)"
    )
    parser.add_argument(
        "-n", "--dry-run", action="store_true", help="validate and list the jobs that would run, without running them"
    )
    parser.set_defaults(func=run)


def snakemake_command(config: Path, cores: str, profile: str | None) -> list[str]:
    """Snakemake on the package's workflow, working in the config's folder with that config alone."""
    config = config.resolve()
    command = [sys.executable, "-m", "snakemake", "-s", str(tb_config.ROOT / "Snakefile")]
    command += ["--directory", str(config.parent), "--configfile", str(config), "--cores", str(cores)]
    return command + (["--profile", profile] if profile else [])


def failure_reason(log: Path) -> str:
    """The one sentence a failed job's log ends with: a tunebench error, else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"its log {log} cannot be read"
    errors = [line for line in lines if COMMAND_ERROR.match(line)]
    return (errors or lines or [f"its log {log} is empty"])[-1]


def _stream(command: list[str], env: dict) -> tuple[int, list[str]]:
    """Run ``command`` with its output shown as it comes; the logs Snakemake names for failed jobs."""
    failed: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        for line in process.stdout:
            sys.stdout.write(line)
            found = FAILED_LOG.match(line)
            if found:
                failed.extend(found.group(1).split(", "))
    sys.stdout.flush()
    return process.returncode, failed


def run(args: argparse.Namespace) -> int:
    config_path = args.config
    tb_config.load([config_path])  # a config error stops here, in one sentence, before any job
    folder = config_path.resolve().parent
    env = dict(os.environ)
    if env.get(MIRROR_ENV):  # the workflow runs in the config's folder: a relative mirror path must still hold
        env[MIRROR_ENV] = str(Path(env[MIRROR_ENV]).resolve())
    command = snakemake_command(config_path, args.cores, args.profile)
    if workflow_lock.main(command[3:]) != 0:
        raise UserError(f"the workflow in {folder} is locked (see above); run again once it is free.")
    started = time.monotonic()
    if args.dry_run:
        return subprocess.run([*command, "--dry-run", "--quiet", "rules"], env=env).returncode
    code, failed = _stream([*command, "--rerun-incomplete"], env)
    if code == 0:
        subprocess.run([*command, "--report", "results/report.html"], env=env, capture_output=True)
    print(f"\nworkflow of {config_path}: {'done' if code == 0 else 'failed'} in {time.monotonic() - started:.0f} s")
    for log in failed:
        print(f"failed job: {log}: {failure_reason(folder / log)}")
    if code != 0 and not (folder / "results" / "metrics.csv").is_file():
        return code
    return code or summary.show(folder / "results", f"tunebench run {config_path}")
