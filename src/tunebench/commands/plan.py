"""``tunebench plan``: print every job's hardware and memory estimate, and refuse jobs that cannot fit."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import config as tb_config
from ..machinery import fit as tb_fit
from ..util.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plan",
        help="check that every job of a config fits the hardware it declares",
        description=(
            "For every training and evaluation job: nodes × GPUs, estimated GPU memory per device and host memory "
            "per node (DeepSpeed's ZeRO-3 estimators for training, accelerate's infer_auto_device_map for "
            "evaluation), from each model's config.json alone. Exits 2 with one sentence per job that does not fit."
        ),
    )
    parser.add_argument(
        "--config",
        type=Path,
        nargs="+",
        default=[tb_config.ROOT / "config" / "config.yaml"],
        help="config file(s), later ones override earlier ones (default: config/config.yaml)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fits = tb_fit.plan(tb_config.load(args.config))
    print(tb_fit.render(fits))
    refused = [fit.refusal() for fit in fits if fit.problems]
    if refused:
        raise ConfigError(
            " ".join(refused) if len(refused) == 1 else f"{len(refused)} jobs do not fit: " + " ".join(refused)
        )
    print(f"all {len(fits)} jobs fit their declared hardware")
    return 0
