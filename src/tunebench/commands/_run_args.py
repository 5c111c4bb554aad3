"""Arguments shared by the subcommands that act on one run of the config."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """The required --config of a command that reads the workflow's config files."""
    parser.add_argument(
        "--config",
        nargs="+",
        type=Path,
        required=True,
        metavar="FILE",
        help="config files, later ones overriding earlier ones",
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
