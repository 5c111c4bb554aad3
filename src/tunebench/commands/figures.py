"""``tunebench figures``: PNG and PDF figures from results/metrics.csv and learning_curves.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as tb_config
from ..results import aggregate, claims, figures, plan
from ._run_args import add_config_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("figures", help="draw the result figures (PNG and PDF)")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="figures to draw: TASK_accuracy, learning_curves, two_stage_TASK, gain_vs_cost, "
        "ablation_format_TASK, claims (default: all the config has)",
    )
    add_config_argument(parser)
    parser.add_argument(
        "--metrics", type=Path, default=Path("results/metrics.csv"), help="output of tunebench aggregate"
    )
    parser.add_argument(
        "--curves", type=Path, default=Path("results/learning_curves.csv"), help="output of tunebench aggregate"
    )
    parser.add_argument("--claims", type=Path, default=Path("results/claims.csv"), help="output of tunebench claims")
    parser.add_argument("--out-dir", type=Path, default=Path("results/figures"), help="directory of the figure files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    experiment = tb_config.load(args.config)
    chosen = plan(experiment).named("figure", args.names)
    draws = {output.draws for output in chosen}
    metrics = aggregate.read_metrics(args.metrics)
    curves = aggregate.read_curves(args.curves) if "learning_curves" in draws else None
    decided = claims.studies(claims.read(args.claims)) if "claims" in draws else None
    written = figures.write_all(chosen, metrics, curves, args.out_dir, decided, known=experiment.tasks)
    print(f"{len(written)} files in {args.out_dir}")
    return 0
