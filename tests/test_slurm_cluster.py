"""The workflow under a real SLURM with two hosts (see slurm_support), every job inside the suite's image:
jobs, multi-node training, a killed step.

To stay within a few minutes on a small CPU machine this runs container_support.small_config (the tiny
config restricted to ViGGO: the prompted baseline, LoRA and full fine-tuning, four optimizer steps an
epoch) rather than all of it:

1. the config through ``snakemake --profile profiles/slurm`` (with tests/slurm_profile for the test
   cluster's partition and squeue): every job is a SLURM job that runs in the image (the CPU-torch
   build of container_support) and results/metrics.csv equals the session's run outside it (small_run_outside);
2. the same full fine-tuning as 2 nodes × 1 process (ZeRO-3 over gloo) through the same rule, whose
   step is killed with ``scancel --signal=KILL`` mid-epoch; the profile's retry resubmits it, and the
   rerun resumes, runs its ranks on both hosts and ends with the history (losses to 4 decimals and
   all) of the uninterrupted single-node 2-process run of step 1. Its srun runs on the host and starts
   the image on each node (tunebench.machinery.cluster).

The profile is used as it stands (--sdm apptainer) but for the image, the bind of the data mirror and
no shared hub cache, given on the command line. This machine has no apptainer: tests/apptainer/apptainer
is a stand-in that runs a command in an image's root file system the way apptainer exec does (see its
docstring), on the image podman built and mounts here (``podman image mount``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from container_support import (
    BIN,
    ENGINE_ENV,
    ONE_NODE,
    engine,
    metrics,
    small_config,
    snakemake_command,
    suite_image,
)
from slurm_support import APPTAINER_STANDIN, two_host_cluster

TIMING = ("tokens_per_s", "wall_time_s", "peak_memory_mb")
FULL = Path("results/train/viggo/tiny-llama/full")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and SLURM's daemons need root"),
]


def _slurm_args(repo_root: Path, mirror: Path, image: Path) -> list[str]:
    return [
        "--profile",
        str(repo_root / "profiles" / "slurm"),
        "--workflow-profile",
        str(repo_root / "tests" / "slurm_profile"),
        "--apptainer-args",
        f"--nv --bind {mirror}",
        "--config",
        f"container={image}",
        "hf_home=",
    ]


@contextlib.contextmanager
def mounted_image(link: Path):
    """The suite's image mounted by podman, as ``link`` (an apptainer sandbox image for the stand-in).
    Mounted before the cluster starts, so that the hosts' mount namespaces see it."""
    tag = suite_image()
    mounted = subprocess.run(
        [engine(), "image", "mount", tag], capture_output=True, text=True, env=ENGINE_ENV, timeout=120
    )
    assert mounted.returncode == 0, mounted.stderr
    link.symlink_to(mounted.stdout.strip())
    try:
        yield link
    finally:
        subprocess.run([engine(), "image", "unmount", tag], capture_output=True, env=ENGINE_ENV, timeout=120)


def _history(directory: Path) -> list[dict]:
    lines = [json.loads(line) for line in (directory / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def _kill_training_step(cluster, resume: Path, process: subprocess.Popen, timeout: float = 400) -> str:
    """SIGKILL the training job's srun step once a state inside epoch 1 is saved; returns the job id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = resume / "LATEST"
        state = latest.read_text() if latest.is_file() else ""
        if re.search(r"-e001s00000[1-3]", state):
            jobs = cluster.run("squeue", "--noheader", "--format=%i %k").stdout.splitlines()
            train = [line.split()[0] for line in jobs if "rule_train" in line]
            listed = cluster.run("squeue", "--noheader", "--steps", "--format=%i").stdout.split()
            # The job's own steps are numbered (N.0, ...); N.batch and N.extern are SLURM's.
            steps = [step for step in listed if train and re.fullmatch(rf"{train[0]}\.\d+", step)]
            if steps:
                cluster.run("scancel", "--signal=KILL", steps[0])
                return train[0]
        if process.poll() is not None:
            raise AssertionError(
                f"the workflow ended before its training step could be killed:\n{process.stdout.read()[-4000:]}"
            )
        time.sleep(0.05)
    raise AssertionError(f"no resume state inside epoch 1 appeared in {resume} within {timeout} s")


def test_the_workflow_on_a_two_host_slurm_cluster(repo_root, with_mirror, small_run_outside, tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    single = small_config(ONE_NODE)
    target = "results/metrics.csv"

    with mounted_image(tmp_path / "tunebench.sif") as image, two_host_cluster(tmp_path / "slurm") as cluster:
        env = {**env, "PATH": f"{APPTAINER_STANDIN}{os.pathsep}{env['PATH']}", "SLURM_CONF": cluster.env["SLURM_CONF"]}
        slurm_args = _slurm_args(repo_root, with_mirror, image)
        # 1. The config as SLURM jobs; the same metrics as the local run.
        work = tmp_path / "on-slurm"
        run = subprocess.run(
            snakemake_command(work, single, target, *slurm_args),
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        assert run.returncode == 0, run.stderr[-4000:] + cluster.logs()
        output = run.stdout + run.stderr
        submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
        counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE)}
        # The workflow's local rules run on the host: the settings stamps (workflow/rules/settings.smk) and the
        # scoring jobs (workflow/rules/evaluate.smk), which take seconds and no model.
        local = sum(n for rule, n in counts.items() if rule.startswith("settings_") or rule == "score")
        assert counts["score"] and len(submitted) == counts["total"] - local  # every other job went through sbatch
        slurm_logs = {path.stem: path.read_text() for path in (work / ".snakemake" / "slurm_logs").rglob("*.log")}
        assert submitted <= set(slurm_logs)
        for job in submitted:  # every job ran in the image, on one of the hosts
            assert f"Activating singularity image {image}" in slurm_logs[job]
            assert re.search(
                rf"^apptainer \(test stand-in\) on node[12]: exec {re.escape(str(image.resolve()))} bash -c ",
                slurm_logs[job],
                re.M,
            )
        assert metrics(work / target) == metrics(small_run_outside)

        # 2. Full fine-tuning as 2 nodes × 1 process, its step killed mid-epoch and resubmitted.
        two_nodes = small_config({"nodes": 2, "threads": 1, "mem_mb": 3000, "processes": 1})
        work2 = tmp_path / "two-nodes"
        (work2 / "results").mkdir(parents=True)
        shutil.copytree(work / "results" / "data", work2 / "results" / "data")
        # The data are step 1's, with their settings stamps (a resources change leaves the data settings
        # as they were, so the stamps are not rewritten and mtime alone does not redo the data job).
        shutil.copytree(work / "results" / "settings" / "data", work2 / "results" / "settings" / "data")
        command = snakemake_command(
            work2,
            two_nodes,
            str(FULL / "best.json"),
            *slurm_args,
            "--rerun-triggers",
            "mtime",
        )
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        try:
            killed = _kill_training_step(cluster, work2 / f"{FULL}.resume", process)
            output, _ = process.communicate(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, output[-4000:] + cluster.logs()
        resubmitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
        assert killed in resubmitted and len(resubmitted) == 2  # the killed job and its retry

        log = (work2 / "results" / "logs" / "train" / "viggo" / "tiny-llama" / "full.log").read_text()
        # srun on the host, then on each node the container runtime, the image and tunebench's launcher in it.
        runtime = f"apptainer exec --home {work2} --nv --bind {with_mirror} {image} tunebench train"
        assert re.search(
            rf"^launch on node1: srun --nodes=2 --ntasks=2 --ntasks-per-node=1 .* {re.escape(runtime)} ", log, re.M
        )
        for host in ("node1", "node2"):
            assert re.search(rf"^apptainer \(test stand-in\) on {host}: exec \S+ tunebench train ", log, re.M)
            assert re.search(
                rf"^launch on {host}: /usr/local/bin/python[0-9.]* -m accelerate.commands.launch ", log, re.M
            )
        assert "--machine_rank 0" in log and "--machine_rank 1" in log and "--main_process_ip node1" in log
        assert "rank 0 of 2 on host node1" in log and "rank 1 of 2 on host node2" in log
        assert re.search(r"resuming at epoch 1, step [123] ", log)
        reference = _history(work / FULL)
        history = _history(work2 / FULL)
        steps = [round(h["loss"], 4) for h in history if h["kind"] == "step"]
        assert steps[:2] == [round(h["loss"], 4) for h in reference if h["kind"] == "step"][:2]
        assert history == reference
        assert not (work2 / f"{FULL}.resume").exists()
