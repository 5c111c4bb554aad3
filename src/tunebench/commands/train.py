"""``tunebench train``: fine-tune one model with one method on one task and keep the best epoch.

Full fine-tuning (and any multi-process job) re-launches this same command through
``accelerate launch`` with the accelerate file the config names, so the DeepSpeed settings live in
``config/accelerate`` and ``config/deepspeed`` and the command reads the same by hand or from a rule.
A multi-node job runs once per node, started by the train rule's srun on the host (see
:mod:`tunebench.machinery.cluster`), and each node's copy starts its accelerate launcher. Every launch line
goes to stderr, which the workflow keeps as the job's log.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from .. import config as tb_config
from ..machinery import cluster
from ..stages import models
from ..stages.tracking import Tracking
from ..stages.train import backend, checkpoint
from ..stages.train import job as tb_job
from ._run_args import add_run_arguments

LAUNCHED_ENV = "TUNEBENCH_LAUNCHED"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="fine-tune a model on a task",
        description=(
            "Train one run of experiments.finetune (task, model, METHOD[-TAG]) and write the selected checkpoint, "
            "history.jsonl, best.json, run.json and config.json. A killed run resumes from DIR.resume/."
        ),
    )
    add_run_arguments(
        parser, "train", run_help="METHOD[-TAG], e.g. lora or lora-instruction", task_help="task of the run"
    )
    parser.set_defaults(func=run)


def _free_port() -> int:
    # Several training jobs may share a machine; each group of processes needs its own rendezvous port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(job: tb_job.Job, args: argparse.Namespace, out_dir: Path, data_dir: Path) -> list[str]:
    """``accelerate launch`` of this command with the job's accelerate file and process count."""
    accelerate_file = backend.accelerate_file(job.accelerate_config)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_file),
        "--num_processes",
        str(job.processes),
    ]
    if job.nodes > 1:
        command += cluster.machine_arguments(job.nodes)
    else:
        command += ["--main_process_port", str(_free_port())]
    deepspeed_file = backend.deepspeed_file(job.accelerate_config)
    if deepspeed_file:
        command += ["--deepspeed_config_file", str(deepspeed_file)]
    return command + ["-m", *train_arguments(args, out_dir, data_dir)]


def train_arguments(args: argparse.Namespace, out_dir: Path, data_dir: Path) -> list[str]:
    return [
        "tunebench.commands.cli",
        "train",
        *(arg for path in args.config for arg in ("--config", str(path))),
        "--task",
        args.task,
        "--model",
        args.model,
        "--run",
        args.run,
        "--out-dir",
        str(out_dir),
        "--data-dir",
        str(data_dir),
    ]


def launch_env(environ, processes: int) -> dict:
    """The workers' environment: the job's threads (Snakemake sets OMP_NUM_THREADS) shared among them,
    since oversubscribed OpenMP threads spin and slow every process down several times."""
    env = dict(environ, **{LAUNCHED_ENV: "1"})
    # DeepSpeed builds its CPU optimizer with the ninja of the venv; a job started without .venv/bin on
    # PATH (the workflow calls this interpreter directly) must still find it.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join(filter(None, [bin_dir, env.get("PATH")]))
    # DeepSpeed compiles its CPU Adam into torch's extension cache; one cache per environment, since
    # environments with other paths rebuild it in turn and wait on each other's lock files.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    import torch

    if not torch.cuda.is_available():
        # DeepSpeed chooses its CPU accelerator here anyway; named, the launcher and every worker skip the search
        # and the warning it prints into each job log.
        env.setdefault("DS_ACCELERATOR", "cpu")
    if env.get("OMP_NUM_THREADS", "").isdigit():
        env["OMP_NUM_THREADS"] = str(max(1, int(env["OMP_NUM_THREADS"]) // processes))
    return env


def run(args: argparse.Namespace) -> int:
    config = tb_config.load(args.config)
    out_dir = args.out_dir or Path("results") / "train" / args.task / args.model / args.run
    data_dir = args.data_dir or Path("results") / "data" / args.task
    job = tb_job.resolve(config, args.task, args.model, args.run, out_dir, data_dir)
    resume = out_dir.parent / f"{out_dir.name}.resume"
    launched = bool(os.environ.get(LAUNCHED_ENV))
    if not launched:
        where = f"resources.train of {args.task}/{args.model}/{args.run}"
        cluster.check_allocation(job.nodes, where)
        checkpoint.check_layout(resume, tb_job.fingerprint(job), tb_job.layout(job))
    # The launcher replaces this process, so a scheduler's signals reach it (and through it the workers).
    if job.launch and not launched:
        models.convert_ahead(job.base_source)
        command = launch_command(job, args, out_dir, data_dir)
        print(f"launch on {socket.gethostname()}: {cluster.show(command)}", file=sys.stderr, flush=True)
        os.execve(command[0], command, launch_env(os.environ, job.processes // job.nodes))

    from ..stages.train import loop

    tracking = Tracking.from_config(config)
    tracking.keep_mlflow_out()
    summary = loop.train(job, out_dir, resume, tracking=tracking)
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"{args.task}/{args.model}/{args.run}: {summary['epochs_run']} epochs, best checkpoint in "
            f"{out_dir / 'checkpoint'}"
        )
    return 0
