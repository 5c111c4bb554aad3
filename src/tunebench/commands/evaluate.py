"""``tunebench evaluate``: generate for one run on a task's test split and score the outputs (or only generate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import config as tb_config
from ..stages.tracking import Tracking
from ..util.errors import UserError
from ._run_args import add_run_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="generate on a task's test split and score it",
        description=(
            "Evaluate one run of the config: a prompted baseline (--run baseline or baseline-VARIANT) or a "
            "fine-tuned run (--run METHOD[-TAG]). Writes generations.jsonl and generation.json into the output "
            "directory, then scores them there into predictions.jsonl and metrics.json; with --generate-only, "
            "tunebench score --generations DIR scores them later (the workflow runs the halves as two jobs)."
        ),
    )
    add_run_arguments(parser, "eval", run_help="baseline[-VARIANT] or METHOD[-TAG]", task_help="task to evaluate on")
    parser.add_argument(
        "--train-dir",
        type=Path,
        metavar="DIR",
        help="training output of a fine-tuned run (default: results/train/TASK/MODEL/RUN)",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads of the model (default: torch's choice)")
    parser.add_argument(
        "--api-cache",
        type=Path,
        metavar="DIR",
        help="cache of an api model's answers, reused by reruns (default: results/api_cache)",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="write the generations and leave the scoring to tunebench score"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch  # the model stack loads only when a run is evaluated, not for `tunebench --help`

    from ..stages import evaluate_api

    config = tb_config.load(args.config)
    tracking = Tracking.from_config(config)
    tracking.keep_mlflow_out()
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads is {args.threads} but must be at least 1.")
        torch.set_num_threads(args.threads)
    parts = (args.task, args.model, args.run)
    metrics = evaluate_api.evaluate_any(
        config,
        *parts,
        data_dir=args.data_dir or Path("results", "data", args.task),
        out_dir=args.out_dir or Path("results", "eval", *parts),
        train_dir=args.train_dir or Path("results", "train", *parts),
        progress=lambda message: print(message, file=sys.stderr, flush=True),
        api_cache=args.api_cache,
        score=not args.generate_only,
    )
    if args.generate_only:
        print(
            f"{args.task}/{args.model}/{args.run}: generated in {metrics['wall_time_s']:.1f} s, "
            f"{metrics['tokens_per_s']:.1f} tokens/s"
        )
        return 0
    if tracking.enabled:
        tracking.log_evaluation(metrics)
    values = ", ".join(
        f"{name} {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]" if m["value"] is not None else f"{name} n/a"
        for name, m in metrics["metrics"].items()
    )
    print(
        f"{args.task}/{args.model}/{args.run}: n={metrics['n']} (unscorable {metrics['unscorable']}); {values}; "
        f"{metrics['tokens_per_s']:.1f} tokens/s"
    )
    return 0
