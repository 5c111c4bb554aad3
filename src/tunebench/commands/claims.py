"""``tunebench claims``: decide the case studies' claims on the evaluated runs (paired bootstrap)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as tb_config
from ..results import claims
from ._run_args import add_config_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("claims", help="decide each claim of the case studies with paired bootstrap intervals")
    add_config_argument(parser)
    parser.add_argument("--results", type=Path, default=Path("results"), help="results directory holding eval/")
    parser.add_argument("--out", type=Path, default=Path("results/claims.csv"), help="the claims table to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    frame = claims.write(tb_config.load(args.config), args.results, args.out)
    found = claims.counts(frame)
    print(f"{args.out}: {len(frame)} rows; " + ", ".join(f"{count} {label}" for label, count in found.items()))
    return 0
