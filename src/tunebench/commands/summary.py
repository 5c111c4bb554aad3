"""``tunebench summary``: where the results are, and the headline comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ..results import paper
from ..util.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("summary", help="print where the paper, report and tables are, and the main comparison")
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="results directory of the workflow, beside its config"
    )
    parser.add_argument(
        "--rerun",
        default="tunebench run CONFIG",
        metavar="COMMAND",
        help="the command that builds these results, named when something is missing",
    )
    parser.set_defaults(func=run)


def show(results: Path, rerun: str) -> int:
    """Print the primary metrics and where each output is; ``rerun`` is the command that builds them."""
    metrics = results / "metrics.csv"
    if not metrics.is_file():
        raise UserError(f"{results} holds no results (no {metrics}); run `{rerun}` first.")
    table = pd.read_csv(metrics)
    primary = table[table["primary"]] if "primary" in table else table
    view = primary.pivot_table(index=["task", "metric"], columns="run", values="value", aggfunc="first")
    print((view * 100).round(1).to_string())
    print()
    for label, path in (
        ("paper", results / "paper" / "tunebench.pdf"),
        ("report", results / "report.html"),
        ("main table", results / "tables" / "main.md"),
        ("comparisons", results / "tables" / "comparisons.md"),
        ("figures", results / "figures"),
        ("metrics", metrics),
    ):
        if label == "comparisons" and not path.exists():
            continue  # only a config that declares comparisons has them
        state = "" if path.exists() else "  (missing)"
        print(f"{label:>11}: {path}{state}")
    missing = paper.tex_missing()
    if missing and not (results / "paper" / "tunebench.pdf").exists():
        print(
            f"The paper PDF was not built: {paper.how_to_get_tex(missing)}, then run `{rerun}` again "
            "(it builds only the paper)."
        )
    return 0


def run(args: argparse.Namespace) -> int:
    return show(args.results, args.rerun)
