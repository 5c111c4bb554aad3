"""``tunebench export``: a prepared split as OpenAI prompt/completion JSON Lines in a prompt format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import config as tb_config
from .. import tasks
from ..stages import formats
from ..tasks import data
from ..util.errors import UserError
from ._run_args import add_config_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a prepared split as OpenAI prompt/completion JSON Lines",
        description=(
            "Render every row of a prepared split (results/data/TASK/SPLIT.jsonl) in a prompt format and "
            'write {"prompt": ..., "completion": ...} lines, the layout of OpenAI\'s fine-tuning files.'
        ),
    )
    parser.add_argument(
        "split_file", type=Path, metavar="SPLIT.jsonl", help="a prepared split, e.g. results/data/viggo/train.jsonl"
    )
    parser.add_argument(
        "--format", choices=formats.FORMATS, default="special_tokens", help="prompt format (default: special_tokens)"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.jsonl", help="output file")
    parser.add_argument(
        "--task",
        help=f"task of the rows: {', '.join(tasks.built_in())}, or one a --config file declares (default: read from "
        "manifest.json beside the split)",
    )
    add_config_argument(
        parser,
        required=False,
        help="a config file (repeatable) declaring the task or the model whose tokenizer the instruction and chat "
        "formats need",
    )
    parser.add_argument("--model", help="model name under models in the config (instruction and chat formats)")
    parser.add_argument(
        "--role", choices=("base", "chat"), default="base", help="which source of the model gives the tokenizer"
    )
    parser.set_defaults(func=run)


def task_of(split_file: Path, known: tasks.TaskSet) -> str:
    """The task named by the manifest that the data stage wrote beside ``split_file``."""
    manifest = split_file.parent / "manifest.json"
    try:
        task = json.loads(manifest.read_text(encoding="utf-8"))["task"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"cannot read the task from {manifest}; pass --task.") from None
    if task not in known.names():
        raise UserError(
            f"{manifest} names the task {task!r}, which is neither built in nor declared; pass its --config."
        )
    return task


def run(args: argparse.Namespace) -> int:
    config = tb_config.load(args.config) if args.config else None
    known = config.tasks if config else tasks.BUILT_IN
    task = args.task or task_of(args.split_file, known)
    if task not in known.names():
        raise UserError(
            f"unknown task {task!r}; name one of {', '.join(known.names())} or declare it under tasks in a --config "
            "file."
        )
    tokenizer = None
    if args.format != "special_tokens":
        if not (config and args.model):
            raise UserError(f"format {args.format} needs the model's tokenizer; pass --config FILE and --model NAME.")
        from ..stages import models

        tokenizer = models.load_tokenizer(models.model_source(config, args.model, args.role))
    rows = data.read_rows(args.split_file)
    exported = formats.export_openai(known.get(task), rows, args.format, tokenizer)
    data.write_rows(args.out, exported)
    print(f"{task}: {len(exported)} rows of {args.split_file} in the {args.format} format written to {args.out}")
    return 0
