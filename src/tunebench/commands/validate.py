"""``tunebench validate``: read and check config files before Snakemake does.

Snakemake's own messages for a config file that is missing, empty, not UTF-8 or not YAML name neither the file
nor the line; this command says which, in one sentence, and checks the merged config against the schema.
"""

from __future__ import annotations

import argparse

from .. import config as tb_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("validate", help="check config files (YAML, schema, tasks) before a workflow run")
    parser.add_argument(
        "--config", nargs="+", required=True, metavar="FILE", help="config YAML files (later ones override)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    tb_config.load(args.config)
    print(f"{', '.join(args.config)}: valid")
    return 0
