"""``tunebench score``: score raw model outputs from a JSON Lines file with a task's scorer.

Each non-blank input line is a JSON object with ``prediction`` (the raw model text) and ``answer``
(the gold answer; for SQL also ``context``, the CREATE TABLE statements). Blank lines are skipped;
any other line that does not fit stops the command with an error naming the line, before anything is
scored or written, so no row is ever dropped silently. The command prints one JSON object
``{"task", "n", "metrics": {name: value}}`` where a value is the share of scorable rows judged
correct; ``--per-example`` also writes every input object, in order, with a ``verdict`` added
(``null`` marks an unscorable row, counted on stderr).

With ``--generations DIR`` (instead of FILE) the command scores a run of the config that ``tunebench evaluate
--generate-only`` wrote into DIR (generations.jsonl, generation.json) against the task's test split, with the
config's scorer settings, and writes predictions.jsonl and metrics.json into DIR (or --out-dir): the workflow's
scoring job.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import config as tb_config
from .. import tasks
from ..stages.tracking import Tracking
from ..tasks.scoring.sqlsuite import EXECUTORS
from ..util import fileio
from ..util.errors import UserError
from ._run_args import add_config_argument

SQL_KEYS = ("sql_databases", "sql_timeout_s", "sql_executor")


def sql_defaults() -> dict:
    """The SQL settings of the ``evaluation`` config section at their schema defaults."""
    evaluation = tb_config.defaults()["evaluation"]
    return {key: evaluation[key] for key in SQL_KEYS}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "score",
        help="score raw model outputs against gold answers",
        description=__doc__.split("\n\n")[1].replace("\n", " ").replace("``", ""),
    )
    parser.add_argument(
        "task", help=f"task whose scorer is used: {', '.join(tasks.scored())}, or one a --config file declares"
    )
    parser.add_argument(
        "file", type=Path, nargs="?", metavar="FILE.jsonl", help="one JSON object per line with prediction and answer"
    )
    generated = parser.add_argument_group("a run's generations (instead of FILE)")
    generated.add_argument(
        "--generations", type=Path, metavar="DIR", help="evaluation directory written by tunebench evaluate"
    )
    generated.add_argument("--data-dir", type=Path, metavar="DIR", help="prepared splits (default: results/data/TASK)")
    generated.add_argument(
        "--out-dir", type=Path, metavar="DIR", help="where predictions and metrics go (default: DIR)"
    )
    parser.add_argument(
        "--per-example", type=Path, metavar="OUT.jsonl", help="also write each input line with its verdict"
    )
    add_config_argument(parser, required=False, help="a config file (repeatable) that declares the task")
    defaults = sql_defaults()
    sql = parser.add_argument_group("SQL only")
    sql.add_argument(
        "--databases",
        type=int,
        metavar="K",
        help=f"synthesised databases per example (default {defaults['sql_databases']})",
    )
    sql.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help=f"time limit of one query in seconds (default {defaults['sql_timeout_s']})",
    )
    sql.add_argument(
        "--executor",
        choices=EXECUTORS,
        help=f"engine that runs the queries; sqlglot replays the study's scorer (default {defaults['sql_executor']})",
    )
    parser.set_defaults(func=run)


def is_sql(task: tasks.Task) -> bool:
    """Whether a task is scored by running SQL: the sql task, or a declared one with the sql_execution scorer."""
    return task.name == "sql" or getattr(task, "section", {}).get("scorer") == "sql_execution"


def sql_options(args: argparse.Namespace, task: tasks.Task) -> dict:
    given = {"sql_databases": args.databases, "sql_timeout_s": args.timeout, "sql_executor": args.executor}
    given = {key: value for key, value in given.items() if value is not None}
    if not is_sql(task):
        if given:
            raise UserError(f"--databases, --timeout and --executor apply to the sql task only, not to {args.task}.")
        return {}
    if given.get("sql_databases", 1) < 1:
        raise UserError(f"--databases is {args.databases} but must be at least 1.")
    if given.get("sql_timeout_s", 1.0) <= 0:
        raise UserError(f"--timeout is {args.timeout} but must be greater than 0.")
    return {**sql_defaults(), **given}


def read_lines(path: Path, task: tasks.Task) -> list[dict]:
    """The input objects, checked; a :class:`UserError` naming the first line that does not fit."""
    if not path.is_file():
        raise UserError(f"input file {path} does not exist; pass a JSON Lines file of predictions and answers.")
    needs = 'a string "prediction" and an "answer"' + (' and a string "context"' if is_sql(task) else "")
    rows = []
    with open(path, encoding="utf-8", errors="strict") as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(
                        f"{path} line {number} is not valid JSON ({exc.msg}); fix or remove that line."
                    ) from None
                except ValueError:  # json's integer conversion stops beyond 4,300 digits
                    raise UserError(
                        f"{path} line {number} holds an integer too long to read (over 4,300 digits); fix or remove "
                        "that line."
                    ) from None
                problem = _problem(row, task)
                if problem:
                    raise UserError(f"{path} line {number} {problem}; every line must be a JSON object with {needs}.")
                rows.append(row)
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text; write the predictions as UTF-8 JSON Lines.") from None
    return rows


def _problem(row: object, task: tasks.Task) -> str | None:
    if not isinstance(row, dict):
        return f"is a JSON {type(row).__name__}, not an object"
    if not isinstance(row.get("prediction"), str):
        return 'has no string "prediction"'
    answer = row.get("answer")
    if answer is None or isinstance(answer, (bool, list, dict)):
        return 'has no "answer" (a string or number)'
    if is_sql(task) and not isinstance(row.get("context"), str):
        return 'has no string "context"'
    return None


def score_file(task: tasks.Task, rows: list[dict], **options) -> tuple[list[dict], dict]:
    """Verdicts of every row and the summary object the command prints."""
    verdicts = [task.score(row["prediction"], row, **options) for row in rows]
    metrics = {}
    for name in task.metrics:
        values = [v[name] for v in verdicts if v[name] is not None]
        metrics[name] = sum(values) / len(values) if values else None
    return verdicts, {"task": task.name, "n": len(rows), "metrics": metrics}


def score_generations(args: argparse.Namespace) -> int:
    """A run's generations scored into predictions.jsonl and metrics.json (the workflow's scoring job)."""
    from ..stages import score as scoring

    if args.file is not None or not args.config:
        raise UserError("--generations scores a run of the config: pass --config and no FILE.")
    if any(value is not None for value in (args.databases, args.timeout, args.executor)):
        raise UserError(
            "--generations scores with the config's evaluation settings; drop --databases, --timeout and --executor."
        )
    config = tb_config.load(args.config)
    facts_path = args.generations / scoring.FACTS
    try:
        facts = json.loads(facts_path.read_text(encoding="utf-8"))
        model, run_name = facts["model"], facts["run"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{facts_path} is missing or not a generation.json of tunebench evaluate; generate the run first."
        ) from None
    metrics = scoring.score_run(
        config,
        args.task,
        model,
        run_name,
        data_dir=args.data_dir or Path("results", "data", args.task),
        gen_dir=args.generations,
        out_dir=args.out_dir or args.generations,
    )
    tracking = Tracking.from_config(config)
    if tracking.enabled:
        tracking.log_evaluation(metrics)
    print(
        json.dumps(
            {
                "task": args.task,
                "n": metrics["n"],
                "unscorable": metrics["unscorable"],
                "metrics": {name: m["value"] for name, m in metrics["metrics"].items()},
            }
        )
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.generations is not None:
        return score_generations(args)
    if args.file is None:
        raise UserError("name a FILE.jsonl of predictions and answers, or a run's --generations DIR.")
    if args.data_dir is not None or args.out_dir is not None:
        raise UserError("--data-dir and --out-dir go with --generations only.")
    known = tb_config.load(args.config).tasks if args.config else tasks.BUILT_IN
    if args.task not in known.scored():
        raise UserError(
            f"unknown task {args.task!r}; name one of {', '.join(known.scored())} or declare it under tasks in a "
            "--config file."
        )
    task = known.get(args.task)
    options = sql_options(args, task)
    if args.per_example is not None and args.per_example.resolve() == args.file.resolve():
        raise UserError(f"--per-example {args.per_example} is the input file; choose another path.")
    rows = read_lines(args.file, task)
    verdicts, summary = score_file(task, rows, **options)
    if args.per_example is not None:
        # ASCII-escaped, so that lone surrogates survive.
        text = "".join(json.dumps({**row, "verdict": verdict}) + "\n" for row, verdict in zip(rows, verdicts))
        fileio.write_atomic(args.per_example, text.encode("ascii"))
    for name in summary["metrics"]:
        unscorable = sum(v[name] is None for v in verdicts)
        if unscorable:
            print(
                f"tunebench score: {unscorable} of {len(rows)} rows are unscorable for {name} and left out of its "
                "value.",
                file=sys.stderr,
            )
    print(json.dumps(summary))
    return 0
