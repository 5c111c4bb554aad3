"""``tunebench paper``: generate the LaTeX includes from results/ and build the PDF with latexmk."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as tb_config
from ..results import aggregate, claims, paper, plan
from ._run_args import add_config_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("paper", help="write the paper's generated includes and build its PDF")
    add_config_argument(parser)
    parser.add_argument(
        "--metrics", type=Path, default=Path("results/metrics.csv"), help="output of tunebench aggregate"
    )
    parser.add_argument(
        "--curves", type=Path, default=Path("results/learning_curves.csv"), help="output of tunebench aggregate"
    )
    parser.add_argument("--claims", type=Path, default=Path("results/claims.csv"), help="output of tunebench claims")
    parser.add_argument("--tables-dir", type=Path, default=Path("results/tables"), help="output of tunebench tables")
    parser.add_argument("--figures-dir", type=Path, default=Path("results/figures"), help="output of tunebench figures")
    parser.add_argument("--data-dir", type=Path, default=Path("results/data"), help="output of tunebench data")
    parser.add_argument("--build-dir", type=Path, default=Path("results/paper/build"), help="where LaTeX runs")
    parser.add_argument("--out", type=Path, default=Path("results/paper/tunebench.pdf"), help="the PDF to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = tb_config.load(args.config)
    main = paper.write_sources(
        config,
        args.config,
        aggregate.read_metrics(args.metrics),
        aggregate.read_curves(args.curves),
        args.tables_dir,
        args.figures_dir,
        args.build_dir,
        claims.read(args.claims) if {"claims", "comparisons"} & set(plan(config).tables) else None,
        data_dir=args.data_dir,
    )
    print(paper.compile_pdf(main, args.out))
    return 0
