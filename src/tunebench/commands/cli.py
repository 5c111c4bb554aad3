"""The ``tunebench`` command: a thin dispatcher over one module per subcommand.

Each module in :mod:`tunebench.commands` defines ``add_parser(subparsers)`` and ``run(args)``;
the logic lives in the library so that tests import it directly. Only the module of the chosen
subcommand is imported, so ``tunebench data`` does not pay for torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module, metadata

# OpenMP threads that spin while waiting stall every other process on a busy CPU (two jobs side by
# side, or DeepSpeed's two ranks): decoding at 2 threads fell from ~37 to ~2 tokens/s. Set before
# any subcommand imports torch; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ..util import quiet
from ..util.errors import UserError
from ._run_args import spread_config_files

DESCRIPTION = (
    "Fine-tune small models and compare them with prompted baselines on benchmark tasks: prepare data, train, "
    "evaluate, decide comparisons and write tables, figures and a paper. Run 'tunebench COMMAND --help' for the "
    "options of a command."
)

COMMANDS = {
    "run": "validate a config, run its whole workflow and print the summary of its results",
    "validate": "check config files (YAML, schema, tasks) before a workflow run",
    "fetch": "download every hub model and dataset the config needs, for offline jobs",
    "data": "prepare a task's dataset (or generate the multiplication rows)",
    "export": "export a prepared split as OpenAI prompt/completion JSONL",
    "plan": "check that every job of a config fits the hardware it declares",
    "train": "fine-tune a model on a task with one method",
    "evaluate": "generate and score a baseline or fine-tuned model on a task's test split",
    "score": "score model outputs in a JSONL file",
    "aggregate": "collect every run's metrics into results/metrics.csv",
    "claims": "decide the case studies' claims and the config's comparisons with paired bootstrap intervals",
    "tables": "write the result tables (CSV, Markdown, LaTeX)",
    "figures": "draw the result figures (PNG, PDF)",
    "paper": "build the paper PDF from the results",
    "summary": "print where the paper, report and tables are, and the main comparison",
    "bench": "measure the hot paths side by side as ratios",
}


class HelpFormatter(argparse.HelpFormatter):
    """States each option's default in its help, unless the help already says it or there is none to state."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Commands(argparse._SubParsersAction):
    """Subcommands whose help page opens with their one-line summary and states the defaults."""

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        summary = kwargs.get("help")
        if summary and not kwargs.get("description"):
            kwargs["description"] = summary[0].upper() + summary[1:] + "."
        kwargs.setdefault("formatter_class", HelpFormatter)
        return super().add_parser(name, **kwargs)


def version() -> str:
    try:
        return metadata.version("tunebench")
    except metadata.PackageNotFoundError:  # a source tree on sys.path without an install
        return "unknown (not installed)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command`` fully defined (every command when None), the others by name only."""
    parser = argparse.ArgumentParser(prog="tunebench", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.register("action", "commands", _Commands)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", action="commands")
    for name, summary in COMMANDS.items():
        if command is None or name == command:
            import_module(f"tunebench.commands.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = spread_config_files(list(sys.argv[1:] if argv is None else argv))
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else "")
    args = parser.parse_args(argv)
    quiet.install()
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"tunebench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
