"""``tunebench aggregate``: every metrics.json and training record of a config → two tidy CSV files."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as tb_config
from ..results import aggregate
from ._run_args import add_config_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("aggregate", help="collect evaluation and training records into results/metrics.csv")
    add_config_argument(parser)
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="results directory holding eval/ and train/"
    )
    parser.add_argument("--out", type=Path, default=Path("results/metrics.csv"), help="tidy metrics table to write")
    parser.add_argument(
        "--curves", type=Path, default=Path("results/learning_curves.csv"), help="per-epoch validation table to write"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = tb_config.load(args.config)
    metrics, curves = aggregate.write(config, args.results, args.out, args.curves)
    runs = len(metrics.drop_duplicates(["task", "model", "run"]))
    print(f"{args.out}: {len(metrics)} rows from {runs} evaluated runs; {args.curves}: {len(curves)} epochs")
    return 0
