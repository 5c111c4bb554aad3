"""``tunebench tables``: CSV, Markdown and LaTeX tables from results/metrics.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as tb_config
from ..results import aggregate, claims, plan, tables
from ._run_args import add_config_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tables", help="write the result tables (CSV, Markdown, LaTeX booktabs)")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="tables to write: main, a task name, published, cost, ablation_format_TASK, claims, comparisons "
        "(default: all the config has)",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--metrics", type=Path, default=Path("results/metrics.csv"), help="output of tunebench aggregate"
    )
    parser.add_argument("--claims", type=Path, default=Path("results/claims.csv"), help="output of tunebench claims")
    parser.add_argument("--out-dir", type=Path, default=Path("results/tables"), help="directory of the table files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    experiment = tb_config.load(args.config)
    chosen = plan(experiment).named("table", args.names)
    decided = claims.read(args.claims) if {"claims", "comparisons"} & {o.draws for o in chosen} else None
    written = tables.write_all(
        chosen, aggregate.read_metrics(args.metrics), args.out_dir, decided, known=experiment.tasks
    )
    print(f"{len(written)} files in {args.out_dir}")
    return 0
