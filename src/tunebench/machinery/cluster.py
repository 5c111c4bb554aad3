"""Jobs on a SLURM cluster: the executor plugin's resources of a job, and the multi-node launch.

The Snakemake SLURM executor plugin speaks in resources (``nodes``, ``tasks_per_node``, ``mpi``,
``gres``, ``cpus_per_task``, ``mem_mb``, ``runtime``); :func:`slurm_resources` turns one row of
the config's resources table into them. A single-node job runs inside the step the plugin starts,
and under ``--sdm apptainer`` Snakemake runs its command in the image.

A multi-node job is marked ``mpi``. The plugin runs such a job's command as it stands in the batch
step of the allocation, on the first node, with no srun of its own: it is the plugin's one place
where a command holds the whole allocation on the host. That is where SLURM must be talked to, and
the image cannot: srun needs the cluster's own SLURM client, its plugins, its config and munge's
socket, none of which an image built elsewhere can carry (binding them in is site-specific and breaks
on every SLURM upgrade). So the train rule gives a multi-node job no container (Snakemake would run the
whole command, srun included, inside the image) and runs ``srun`` on the host, which starts one task
per node; each task runs ``<per-node command> train …``: the image through the container runtime
(``apptainer exec --home "$PWD" <apptainer-args> IMAGE tunebench``, the profile's own settings) or,
without containers, this interpreter. This is the hybrid model apptainer documents for MPI (host
launcher, containerised ranks), and it is the one the plugin's ``mpi`` job step is made for.

Inside each task ``tunebench train`` checks the allocation from SLURM's environment alone and starts
``accelerate launch --num_machines N --machine_rank $SLURM_NODEID`` (its DeepSpeed "standard"
multi-node launcher is torch's elastic agent with a static rendezvous on the first host). Nothing in
the image calls a SLURM command. Accelerate rather than bare torchrun, because the accelerate file
that names the DeepSpeed settings then stays the one source of the distributed setup.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import sys
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


def check_allocation(nodes: int, where: str) -> None:
    """A multi-node job runs only as one of the per-node tasks :func:`node_step_command` starts in a SLURM
    allocation of exactly its node count."""
    if nodes == 1:
        return
    if not in_allocation():
        raise ConfigError(
            f"{where} asks for {nodes} nodes, which only a SLURM allocation provides; run the workflow with "
            "--profile profiles/slurm or set nodes: 1."
        )
    if not os.environ.get(NODE_LAUNCH_ENV):
        raise ConfigError(
            f"{where} asks for {nodes} nodes, which start once on every node through srun: run it through the "
            "workflow with --profile profiles/slurm, whose train rule does that."
        )
    # srun sets the step's node count and node list in every task (the job's are not always handed on).
    spanned = int(os.environ["SLURM_STEP_NUM_NODES"])
    if spanned != nodes:
        raise ConfigError(
            f"{where} asks for {nodes} nodes but this SLURM job step spans {spanned}; "
            f"submit it with --nodes={nodes} (the SLURM profile does)."
        )


def node_step_command(per_node: str, arguments: list[str], nodes: int, threads: int) -> list[str]:
    """srun starting ``per_node arguments`` once on every node of the allocation, with the node's CPUs.

    ``per_node`` is a shell word list: the container runtime's prefix ending in the image's ``tunebench``,
    or this interpreter's ``python -m tunebench``. srun itself runs on the host.
    """
    return [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={threads}",
        "--kill-on-bad-exit=1",
        f"--export=ALL,{NODE_LAUNCH_ENV}=1",
        *shlex.split(per_node),
        *arguments,
    ]


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list (``gpu[07-09,12],cpu1`` gives ``gpu07``); of the step's list, the
    host of node 0 and the rendezvous address of every node's launcher. Read from the list itself, because
    the image has no scontrol."""
    match = re.match(r"([^,\[]*)(?:\[([^-,\]]+))?", nodelist)
    return match.group(1) + (match.group(2) or "")


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
        first_host(os.environ["SLURM_STEP_NODELIST"]),
        "--main_process_port",
        str(rendezvous_port()),
        "--deepspeed_multinode_launcher",
        "standard",
    ]


def show(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def main(argv: list[str]) -> None:
    """``python -m tunebench.machinery.cluster NODES THREADS PER_NODE ARGS...``: the multi-node launch."""
    nodes, threads, per_node, *arguments = argv
    # $PWD in the container runtime's prefix is the job's directory (apptainer's --home).
    per_node = shlex.join(os.path.expandvars(word) for word in shlex.split(per_node))
    command = node_step_command(per_node, arguments, int(nodes), int(threads))
    print(f"launch on {socket.gethostname()}: {show(command)}", file=sys.stderr, flush=True)
    # srun replaces this process, so the scheduler's signals reach it (and through it every node's task).
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
