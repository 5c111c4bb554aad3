"""The paper matrix as SLURM jobs: what the profile's dry run lists, and the sbatch line each job gets.

The sbatch arguments are built by the SLURM executor plugin's own functions (``get_submit_command``
and ``set_gres_string``) from the resources the workflow gives each job in a dry run, so a change in
the rules, the config or the plugin shows here.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_support import APPTAINER_STANDIN
from tunebench.machinery import cluster
from tunebench.stages.train import checkpoint
from tunebench.util.errors import ConfigError, UserError

BIN = Path(sys.executable).parent
SLURM_TOOLS = {"sbatch", "srun", "squeue", "sacct", "scontrol", "sinfo", "scancel", "salloc", "sacctmgr", "sshare"}


@pytest.fixture(scope="module")
def no_slurm_path(tmp_path_factory) -> str:
    """A PATH with this venv and the system's tools but no SLURM command: a laptop, not a cluster."""
    tools = tmp_path_factory.mktemp("no-slurm-bin")
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        for path in Path(directory).glob("*"):
            if path.name not in SLURM_TOOLS and not (tools / path.name).exists():
                (tools / path.name).symlink_to(path)
    return f"{BIN}{os.pathsep}{tools}"


@pytest.fixture(scope="module")
def dry_run(repo_root, no_slurm_path, tmp_path_factory):
    """``snakemake -n --profile profiles/slurm`` on the paper config with the profile as it stands: (seconds,
    output). Snakemake asks ``apptainer --version`` before it accepts the profile's --sdm apptainer, even in a
    dry run, so tests/apptainer (a stand-in, see its docstring) comes first on PATH."""
    workdir = tmp_path_factory.mktemp("slurm-dry-run")
    command = [
        str(BIN / "snakemake"),
        "-n",
        "--profile",
        str(repo_root / "profiles" / "slurm"),
        "-s",
        str(repo_root / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(repo_root / "config" / "config.yaml"),
    ]
    env = {**os.environ, "PATH": f"{APPTAINER_STANDIN}{os.pathsep}{no_slurm_path}"}
    subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)  # warm the file cache
    start, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    seconds, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr[-3000:]
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return (seconds, cpu), result.stdout + result.stderr


def _job_shell(output: str, log: str) -> str:
    """The shell command the dry run lists for the job whose log is ``log``."""
    block = output[output.index(f"log: {log}") :]
    return next(line for line in block.splitlines() if line.startswith("Shell command: ")).removeprefix(
        "Shell command: "
    )


def _job_resources(output: str, log: str) -> dict:
    """The resources the dry run lists for the job whose log is ``log``."""
    block = output[output.index(f"log: {log}") :]
    line = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
    resources = {}
    for item in line.split("resources:", 1)[1].split(", "):
        name, value = item.strip().split("=", 1)
        resources[name] = int(value) if value.isdigit() else value
    return resources


def test_the_profiles_dry_run_lists_the_whole_matrix_quickly_without_slurm(dry_run, paper_config):
    seconds, output = dry_run
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE))
    finetune = paper_config.finetune
    evaluated = paper_config.evaluated
    assert int(counts["train"]) == len(finetune) == 33
    assert int(counts["generate"]) == int(counts["score"]) == len(evaluated)
    wall, cpu = seconds
    # Measured, not judged (a timed assertion fails on a busy machine): the log shows what a dry run costs.
    print(f"the dry run took {wall:.1f} s ({cpu:.1f} s of CPU)")


def _sbatch(resources: dict, threads: int) -> str:
    from snakemake.iocontainers import Namedlist
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = type("Job", (), {"resources": Namedlist(fromdict=resources), "threads": threads})()
    params = {
        "run_uuid": "run",
        "slurm_logfile": "log",
        "comment_str": "c",
        "account": "",
        "partition": "-p gpu",
        "workdir": "/work",
    }
    return get_submit_command(job, params) + set_gres_string(job)


# (log, nodes, GPUs per node, memory per node in MB, minutes, whether the rule starts its own srun); the
# training jobs' minutes are ViGGO's entries of runtime_by_task, not the rows' runtime.
PAPER_JOBS = [
    ("results/logs/train/viggo/llama2-7b/full.log", 2, "gpu:a10g:8", 192000, 60, True),
    ("results/logs/train/viggo/llama2-13b/lora.log", 1, "gpu:a10g:8", 160000, 120, False),
    ("results/logs/train/viggo/llama2-70b/full.log", 4, "gpu:a10g:8", 640000, 300, True),
    ("results/logs/train/viggo/llama2-70b/qlora.log", 1, "gpu:a100_80g:2", 240000, 720, False),
    ("results/logs/eval/viggo/llama2-70b/baseline.log", 1, "gpu:a100:8", 320000, 360, False),
]


@pytest.mark.parametrize("log, nodes, gres, mem_mb, minutes, multi", PAPER_JOBS)
def test_sbatch_arguments_of_the_paper_jobs(dry_run, log, nodes, gres, mem_mb, minutes, multi):
    resources = _job_resources(dry_run[1], log)
    threads = resources.get("cpus_per_task", 8)
    line = _sbatch(resources, threads)
    assert f"--nodes={nodes}" in line
    assert f"--gres={gres}" in line and "--gpus" not in line  # per node, never a total SLURM may split
    assert f"--mem {mem_mb}" in line and f"-t {minutes}" in line
    assert "-p gpu" in line
    per_node = int(gres.rsplit(":", 1)[1])
    if multi:
        # One allocation over N nodes with a task per GPU; the rule's own srun starts the launchers.
        assert resources["mpi"] == "srun" and f"--ntasks-per-node={per_node}" in line
        assert f"--cpus-per-task={resources['cpus_per_task']}" in line
        # Started on the host, once per node (tunebench.machinery.cluster), rather than inside the image.
        threads = resources["cpus_per_task"] * per_node
        assert _job_shell(dry_run[1], log).startswith(f"tunebench_nodes {nodes} {threads} train ")
    else:
        assert "mpi" not in resources and "--ntasks-per-node" not in line
        assert _job_shell(dry_run[1], log).startswith(("tunebench train ", "tunebench evaluate "))


def test_the_profile_runs_jobs_in_the_image(dry_run):
    assert "Singularity image docker://ghcr.io/tunebench/tunebench:0.1.0 will be pulled." in dry_run[1]


def test_cpu_stages_go_to_the_cpu_partition(dry_run):
    assert _job_resources(dry_run[1], "results/logs/data/viggo.log")["slurm_partition"] == "cpu"
    assert _job_resources(dry_run[1], "results/logs/train/viggo/llama2-7b/full.log")["slurm_partition"] == "gpu"
    assert _job_resources(dry_run[1], "results/logs/eval/viggo/llama2-7b/full.log")["slurm_partition"] == "gpu"


def test_a_two_node_cpu_job_has_one_task_per_node():
    rows = {"nodes": 2, "processes_per_node": 1, "gpu": 0, "gpus": 0, "mem_mb": 3000, "runtime": 10, "threads": 1}
    resources = {k: v for k, v in cluster.slurm_resources(rows).items() if v is not None}
    assert resources == {"nodes": 2, "mem_mb": 3000, "runtime": 10, "mpi": "srun", "tasks": 2, "cpus_per_task": 1}
    line = _sbatch(resources, threads=1)
    assert "--nodes=2" in line and "--ntasks=2" in line and "--cpus-per-task=1" in line and "gres" not in line


def test_multinode_training_outside_slurm_is_one_sentence(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ConfigError, match="asks for 2 nodes, which only a SLURM allocation provides"):
        cluster.check_allocation(2, "resources.train of viggo/llama2-7b/full")
    cluster.check_allocation(1, "resources.train of viggo/llama2-7b/full")


def test_multinode_training_runs_only_as_the_rules_per_node_tasks(monkeypatch):
    where = "resources.train of viggo/llama2-7b/full"
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_STEP_NUM_NODES", "2")
    monkeypatch.delenv(cluster.NODE_LAUNCH_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"start once on every node through srun: run it through the workflow"):
        cluster.check_allocation(2, where)
    monkeypatch.setenv(cluster.NODE_LAUNCH_ENV, "1")
    cluster.check_allocation(2, where)
    with pytest.raises(ConfigError, match=r"asks for 4 nodes but this SLURM job step spans 2; submit it with"):
        cluster.check_allocation(4, where)


@pytest.mark.parametrize(
    "nodelist, first",
    [("node1", "node1"), ("node[1-2]", "node1"), ("gpu[07-09,12],cpu1", "gpu07"), ("a-1,b-2", "a-1")],
)
def test_the_rendezvous_host_is_the_first_of_the_allocation(nodelist, first):
    assert cluster.first_host(nodelist) == first


def test_the_node_step_starts_the_per_node_command_once_per_node_on_the_host():
    command = cluster.node_step_command(
        "apptainer exec --home /work --nv img.sif tunebench", ["train", "--run", "full"], nodes=2, threads=8
    )
    assert command[:7] == [
        "srun",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=8",
        "--kill-on-bad-exit=1",
        f"--export=ALL,{cluster.NODE_LAUNCH_ENV}=1",
    ]
    assert command[7:] == [
        "apptainer",
        "exec",
        "--home",
        "/work",
        "--nv",
        "img.sif",
        "tunebench",
        "train",
        "--run",
        "full",
    ]


def test_resume_state_of_another_node_count_is_refused(tmp_path):
    resume = tmp_path / "full.resume"
    resume.mkdir()
    (resume / checkpoint.FINGERPRINT).write_text('{"fingerprint": "f", "layout": {"nodes": 2, "processes": 2}}')
    (resume / checkpoint.LATEST).write_text("state-0000001-e001s000001\n")
    with pytest.raises(
        UserError,
        match=r"was saved by 2 node\(s\) × 1 processes but this job runs 1 × 2; resume on the same node count",
    ):
        checkpoint.check_layout(resume, "f", {"nodes": 1, "processes": 2})
    checkpoint.check_layout(resume, "f", {"nodes": 2, "processes": 2})  # the same layout resumes
    checkpoint.check_layout(resume, "other settings", {"nodes": 1, "processes": 2})  # other settings: discarded later
