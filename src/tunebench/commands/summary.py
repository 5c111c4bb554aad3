"""``tunebench summary``: where the results are, and the headline comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ..results import paper


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("summary", help="print where the paper, report and tables are, and the main comparison")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results directory of the workflow")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results = args.results
    metrics = results / "metrics.csv"
    if metrics.is_file():
        table = pd.read_csv(metrics)
        primary = table[table["primary"]] if "primary" in table else table
        view = primary.pivot_table(index=["task", "metric"], columns="run", values="value", aggfunc="first")
        print((view * 100).round(1).to_string())
        print()
    for label, path in (
        ("paper", results / "paper" / "tunebench.pdf"),
        ("report", results / "report.html"),
        ("main table", results / "tables" / "main.md"),
        ("metrics", metrics),
    ):
        state = "" if path.exists() else "  (missing)"
        print(f"{label:>10}: {path}{state}")
    missing = paper.tex_missing()
    if missing and not (results / "paper" / "tunebench.pdf").exists():
        print(
            f"The paper PDF was not built: {paper.how_to_get_tex(missing)}, then run `make demo` again "
            "(it builds only the paper)."
        )
    return 0
