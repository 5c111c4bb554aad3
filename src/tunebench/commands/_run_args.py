"""Arguments shared by the subcommands that act on one run of the config."""

from __future__ import annotations

import argparse
from pathlib import Path

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def spread_config_files(argv: list[str]) -> list[str]:
    """``--config A.yaml B.yaml`` as ``--config A.yaml --config B.yaml``: each --config takes one file, so a
    positional argument after it stays positional; files in a row after one --config are still read
    (the workflow's rules pass them so) as long as their names end in .yaml, .yml or .json."""
    out: list[str] = []
    state = "other"  # "value": the next argument is a --config's file; "files": more files may follow
    for arg in argv:
        if state == "files" and not arg.startswith("-") and arg.endswith(CONFIG_SUFFIXES):
            out.append("--config")
        elif state != "value":
            state = "other"
        out.append(arg)
        state = "value" if arg == "--config" else "files" if state == "value" else state
    return out


def add_config_argument(parser: argparse.ArgumentParser, required: bool = True, help: str | None = None) -> None:
    """The --config of a command that reads the workflow's config files: one file per flag, repeatable."""
    parser.add_argument(
        "--config",
        action="append",
        type=Path,
        required=required,
        metavar="FILE",
        help=help or "a config file; repeat the flag for more, later files overriding earlier ones",
    )


def add_run_arguments(parser: argparse.ArgumentParser, stage: str, run_help: str, task_help: str) -> None:
    """--config, --task, --model, --run, --out-dir and --data-dir of a ``stage`` (train or eval) job."""
    add_config_argument(parser)
    parser.add_argument("--task", required=True, help=task_help)
    parser.add_argument("--model", required=True, help="model name from the config's models")
    parser.add_argument("--run", required=True, metavar="RUN", help=run_help)
    parser.add_argument(
        "--out-dir", type=Path, metavar="DIR", help=f"output directory (default: results/{stage}/TASK/MODEL/RUN)"
    )
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="prepared splits (default: results/data/TASK)")
