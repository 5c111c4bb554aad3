"""The ``tunebench`` command: a thin dispatcher over one module per subcommand.

Each module in :mod:`tunebench.commands` defines ``add_parser(subparsers)`` and ``run(args)``;
the logic lives in the library so that tests import it directly.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .errors import UserError

COMMANDS = ("data", "export", "train", "evaluate", "score", "aggregate", "tables", "figures", "paper")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunebench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = import_module(f"tunebench.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"tunebench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
