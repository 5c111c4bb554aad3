"""``tunebench plan``: every job's hardware, memory and time; refuse jobs that cannot fit or finish."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from .. import config as tb_config
from ..machinery import fit as tb_fit
from ..machinery import walltime
from ..util.errors import ConfigError
from ._run_args import add_config_argument

PROFILE = tb_config.ROOT / "profiles" / "slurm" / "config.yaml"


def _profile_attempts() -> int:
    """Runs a job gets on the cluster: the first and the SLURM profile's retries."""
    profile = yaml.safe_load(PROFILE.read_text()) if PROFILE.is_file() else {}
    return 1 + int((profile or {}).get("retries") or 0)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plan",
        help="check that every job of a config fits the hardware it declares and finishes in its runtime",
        description=(
            "For every training and evaluation job: nodes × GPUs, estimated GPU memory per device and host memory "
            "per node (DeepSpeed's ZeRO-3 estimators for training, accelerate's infer_auto_device_map for "
            "evaluation), from each model's config.json alone. For every training job: tokens per epoch, the "
            "padding overhead, hours and GPU-hours from a throughput table, and the interval between resume states; "
            "then the GPU-hours of the whole matrix against the same matrix under study A's pad_to 512. Exits 2 "
            "with one sentence per job that does not fit or cannot finish in runtime × attempts."
        ),
    )
    add_config_argument(
        parser,
        help="a config file to plan, e.g. config/config.yaml for the paper matrix; repeat the "
        "flag for more, later files overriding earlier ones",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=_profile_attempts(),
        help="runs each job gets before it fails for good (default: 1 + the SLURM profile's retries)",
    )
    parser.add_argument(
        "--max-resume-minutes",
        type=float,
        default=60.0,
        help="longest work a kill may lose: resume states must be at most this far apart (default: 60)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path("results") / "data",
        help="prepared data to count tokens from where it exists (default: results/data)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.attempts < 1 or args.max_resume_minutes <= 0:
        raise ConfigError("--attempts must be at least 1 and --max-resume-minutes above 0.")
    config = tb_config.load(args.config)
    fits = tb_fit.plan(config)
    print(tb_fit.render(fits))
    timings = walltime.timings(config, args.attempts, args.max_resume_minutes, args.data_root)
    print()
    print(walltime.render(timings))
    total = walltime.total_gpu_hours(timings)
    studied = walltime.total_gpu_hours(
        walltime.timings(config, args.attempts, args.max_resume_minutes, args.data_root, walltime.STUDY_LAYOUT)
    )
    unknown = sum(t.hours is None for t in timings)
    print(
        f"total: {total:,.0f} GPU-hours for {len(timings) - unknown} training jobs"
        + (f" ({unknown} without a throughput figure left out)" if unknown else "")
        + (
            f"; the same matrix with pad_to 512: {studied:,.0f} GPU-hours (ratio {total / studied:.3f})"
            if studied
            else ""
        )
        + f"; {args.attempts} attempts per job, resume states at most {args.max_resume_minutes:.0f} min apart"
    )
    refused = [fit.refusal() for fit in fits if fit.problems] + [t.refusal() for t in timings if t.problems]
    if refused:
        raise ConfigError(
            " ".join(refused) if len(refused) == 1 else f"{len(refused)} jobs do not fit: " + " ".join(refused)
        )
    print(f"all {len(fits)} jobs fit their declared hardware and all {len(timings)} training jobs their runtime")
    return 0
