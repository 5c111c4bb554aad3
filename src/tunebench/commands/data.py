"""``tunebench data``: prepare one task's train/validation/test splits and manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as tb_config
from .. import tasks
from ..stages import dataset
from ..tasks import data
from ..util.errors import UserError
from ._run_args import add_config_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "data",
        help="prepare a task's splits and manifest",
        description=(
            "Read a task's dataset from the mirror (data.mirror or TUNEBENCH_DATA_MIRROR) or the hub, or "
            "generate it (multiplication), and write {train,validation,test}.jsonl plus manifest.json."
        ),
    )
    parser.add_argument("task", help=f"task to prepare: {', '.join(tasks.built_in())}, or one the config declares")
    add_config_argument(
        parser,
        required=False,
        help="a config file, repeatable, later files overriding earlier ones (default: every key at its schema "
        "default)",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument(
        "--out-dir", type=Path, metavar="DIR", help="directory for the splits and manifest (default: results/data/TASK)"
    )
    out.add_argument(
        "--out",
        type=Path,
        metavar="FILE.jsonl",
        help="write every row into one JSON Lines file, each with a `split` field, instead of a directory",
    )
    parser.add_argument(
        "--seed", type=int, help="seed of the generator, shuffles and limits (default: the config's seed)"
    )
    parser.add_argument("--rows", type=int, help="multiplication only: rows generated across the splits")
    parser.add_argument(
        "--digits", type=int, nargs=2, metavar=("A", "B"), help="multiplication only: digits of the two operands"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = tb_config.load(args.config) if args.config else tb_config.defaults()
    if args.task not in config.tasks.names():
        raise UserError(
            f"unknown task {args.task!r}; name one of {', '.join(config.tasks.names())} or declare it under tasks in "
            "--config."
        )
    overrides = {}
    if args.rows is not None:
        overrides["rows"] = args.rows
    if args.digits is not None:
        overrides["digits"] = list(args.digits)
    if overrides and args.task != "multiplication":
        raise UserError(f"--rows and --digits apply to the generated multiplication task, not to {args.task}.")
    if args.rows is not None and args.rows < 10:
        raise UserError(f"--rows is {args.rows} but must be at least 10.")
    if args.digits is not None and not all(1 <= d <= 12 for d in args.digits):
        raise UserError(f"--digits {args.digits[0]} {args.digits[1]} must both be between 1 and 12.")

    target = args.out or args.out_dir or Path("results") / "data" / args.task
    ledger = (target.parent if args.out else target) / f"{args.task}.sources.json"
    prepared, manifest = dataset.prepare(args.task, config, seed=args.seed, ledger=ledger, **overrides)
    if args.out:
        rows = [dict(row, split=split) for split in data.SPLITS for row in prepared.splits[split]]
        data.write_rows(args.out, rows)
    else:
        dataset.write(target, prepared, manifest)
    sizes = ", ".join(f"{split} {manifest['rows'][split]}" for split in data.SPLITS)
    dropped = ", ".join(f"{f['name']} {f['dropped_total']}" for f in manifest["filters"]) or "none"
    flagged = manifest["overlap"]["flagged"]
    print(
        f"{args.task}: {sizes} rows; {manifest['bad_rows_total']} malformed dropped; filters: {dropped}; "
        f"duplicates or test overlap in train {flagged['train']}, validation {flagged['validation']} "
        f"({manifest['overlap']['policy']}); written to {target}"
    )
    return 0
