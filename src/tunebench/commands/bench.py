"""``tunebench bench``: measure the hot paths side by side and print their ratios."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..util.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="measure training, decoding, scoring and data paths as ratios in one run")
    parser.add_argument("--out-dir", type=Path, default=Path("results/bench"), help="where the CSV files and figure go")
    parser.add_argument(
        "--quick", action="store_true", help="a few steps of each, to check the command (numbers mean little)"
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="instead: our training loop and evaluation against TRL's SFTTrainer and lm-evaluation-harness "
        "(the bench extra)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: every core torch uses; 1 measures one demo job's share)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..machinery import bench

    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads is {args.threads} but must be at least 1.")
    if args.peers:
        from ..machinery import bench_peers

        table = bench_peers.run(args.out_dir, quick=args.quick, threads=args.threads)
    else:
        table = bench.run(args.out_dir, quick=args.quick, threads=args.threads)
    print(table.round(3).to_string(index=False))
    print(f"written to {args.out_dir}")
    return 0
