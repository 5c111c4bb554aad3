"""Jobs on a SLURM cluster: the executor plugin's resources of a job, and the multi-node launch.

The Snakemake SLURM executor plugin speaks in resources (``nodes``, ``tasks_per_node``, ``mpi``,
``gres``, ``cpus_per_task``, ``mem_mb``, ``runtime``); :func:`slurm_resources` turns one row of
the config's resources table into them. A single-node job runs inside the step the plugin starts.
A multi-node job is marked ``mpi`` so that the plugin runs the rule's command in the allocation
itself; ``tunebench train`` then starts one launcher per node with ``srun --ntasks-per-node=1``,
and each launcher is ``accelerate launch --num_machines N --machine_rank $SLURM_NODEID`` (its
DeepSpeed "standard" multi-node launcher is torch's elastic agent with a static rendezvous on the
first host). Accelerate rather than bare torchrun, because the accelerate file that names the
DeepSpeed settings then stays the one source of the distributed setup, on one node or many.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping

from ..util.errors import ConfigError

# Inside a multi-node allocation, set on the per-node launchers that srun starts.
NODE_LAUNCH_ENV = "TUNEBENCH_NODE_LAUNCH"
# Rendezvous ports are derived from the job id so that every node computes the same one and two
# jobs sharing a node do not collide.
PORT_BASE, PORT_SPAN = 29500, 20000


def slurm_resources(rows: Mapping) -> dict:
    """The SLURM executor plugin's resources for one job of ``config.resources`` (None leaves one unset).

    ``gres`` is per node in SLURM (``--gres=gpu:a10g:8``), so N nodes get 8 GPUs each, which the
    plugin's ``gpu`` (``--gpus``, a total) would not guarantee. ``gpus`` is the job's GPU total: the
    plugin's job step asks for it, and a local profile can cap it.
    """
    nodes, per_node = rows["nodes"], rows["processes_per_node"]
    gres = None
    if rows["gpu"]:
        gres = f"gpu:{rows['gpu_model']}:{rows['gpu']}" if rows.get("gpu_model") else f"gpu:{rows['gpu']}"
    multi = nodes > 1
    return {
        "nodes": nodes,
        "mem_mb": rows["mem_mb"],  # per node, as SLURM's --mem
        "runtime": rows["runtime"],
        "gres": gres,
        "gpus": rows["gpus"] or None,
        # The plugin runs an mpi job's command without its own srun, and wants a task geometry for
        # it (and more than one task per node when it is given per node).
        "mpi": "srun" if multi else None,
        "tasks_per_node": per_node if multi and per_node > 1 else None,
        "tasks": nodes if multi and per_node == 1 else None,
        "cpus_per_task": rows["threads"] // per_node if multi else None,
    }


def in_allocation() -> bool:
    return bool(os.environ.get("SLURM_JOB_ID"))


def allocation_nodes() -> int:
    """Nodes of this job's allocation. The plugin's job step hands on only SLURM_JOB_ID, so ask squeue."""
    if os.environ.get("SLURM_JOB_NUM_NODES"):
        return int(os.environ["SLURM_JOB_NUM_NODES"])
    listed = subprocess.run(
        ["squeue", "--noheader", "--jobs", os.environ["SLURM_JOB_ID"], "--format", "%D"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(listed[0])


def check_allocation(nodes: int, where: str) -> None:
    """A multi-node job runs only in a SLURM allocation of exactly its node count."""
    if nodes == 1:
        return
    if not in_allocation():
        raise ConfigError(
            f"{where} asks for {nodes} nodes, which only a SLURM allocation provides; run the workflow with "
            "--profile profiles/slurm or set nodes: 1."
        )
    if allocation_nodes() != nodes:
        raise ConfigError(
            f"{where} asks for {nodes} nodes but this SLURM allocation has {allocation_nodes()}; "
            f"submit it with --nodes={nodes} (the SLURM profile does)."
        )


def node_step_command(command: list[str], nodes: int, threads: int) -> list[str]:
    """srun starting ``command`` once on every node of the allocation, with the node's CPUs."""
    return [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={threads}",
        "--kill-on-bad-exit=1",
        "--export=ALL",
        *command,
    ]


def first_host() -> str:
    """The first host of the allocation: the rendezvous address of every node's launcher."""
    listed = subprocess.run(
        ["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True
    ).stdout.split()
    return listed[0]


def rendezvous_port() -> int:
    return PORT_BASE + int(os.environ["SLURM_JOB_ID"]) % PORT_SPAN


def machine_arguments(nodes: int) -> list[str]:
    """accelerate launch arguments of this node's launcher in an N-node allocation."""
    return [
        "--num_machines",
        str(nodes),
        "--machine_rank",
        os.environ["SLURM_NODEID"],
        "--main_process_ip",
        first_host(),
        "--main_process_port",
        str(rendezvous_port()),
        "--deepspeed_multinode_launcher",
        "standard",
    ]


def show(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)
