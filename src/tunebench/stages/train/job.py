"""Resolve one training run of the experiment: every setting the run uses, checked before any work.

The result is a frozen :class:`Job`, a view of the experiment's :class:`~tunebench.config.Run` with what
is resolved for this machine (data files, dtype, nodes and processes, launcher, settings hash). It is
written as the run's ``config.json``; its hash (with the data files') decides whether an existing resume
state belongs to this run.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ... import config as tb_config
from ...config import digests as tb_digests
from ...tasks import Task
from ...tasks.data import sha256_file
from ...util import hardware
from ...util.errors import ConfigError, DataError
from .. import models
from . import backend, methods

SPLITS = ("train", "validation")


def _of_run(name: str) -> property:
    """A field of the job's run, read through the job."""
    return property(lambda job: getattr(job.spec, name), doc=f"The run's {name}.")


@dataclass(frozen=True)
class Job:
    """One training run of the experiment (``spec``) with what is resolved for this machine. The nested
    settings stay plain dicts: they are written as they are."""

    spec: tb_config.Run
    definition: Task  # the run's task, built in or declared by the config
    base_source: dict
    training: dict  # the run's training settings, dtype resolved for this machine
    method_settings: dict
    init_checkpoint: str | None
    nodes: int
    processes: int
    threads_per_node: int
    accelerate_config: str  # full fine-tuning always runs under its DeepSpeed file; LoRA/QLoRA when data-parallel
    launch: bool
    data: dict  # split -> {"path", "sha256"}
    settings_hash: str  # what the workflow's stamp and param for this run hold; run.json repeats it
    launcher: dict | None = None  # the accelerate and DeepSpeed files of a launched job

    task = _of_run("task")
    model = _of_run("model")
    method = _of_run("method")
    run = _of_run("run")
    format = _of_run("format")
    stage = _of_run("stage")  # finetuned or two_stage

    @property
    def seed(self) -> int:
        return self.spec.training["seed"]

    @property
    def init_from(self) -> dict | None:
        """``{"task", "run"}`` of the first stage of a two-stage run."""
        return dict(zip(("task", "run"), self.spec.init_from, strict=True)) if self.spec.init_from else None

    def to_dict(self) -> dict:
        """The job as config.json holds it, keys in this order (``launcher`` only for a launched job): the
        settings hash and resume fingerprint are taken over it."""
        fields = {
            "task": self.task,
            "model": self.model,
            "method": self.method,
            "run": self.run,
            "format": self.format,
            "stage": self.stage,
            "seed": self.seed,
            "base_source": self.base_source,
            "training": self.training,
            "method_settings": self.method_settings,
            "init_from": self.init_from,
            "init_checkpoint": self.init_checkpoint,
            "nodes": self.nodes,
            "processes": self.processes,
            "threads_per_node": self.threads_per_node,
            "accelerate_config": self.accelerate_config,
            "launch": self.launch,
            "data": self.data,
            "settings_hash": self.settings_hash,
        }
        if self.launcher is not None:
            fields["launcher"] = self.launcher
        return copy.deepcopy(fields)


def _check_hardware(job: Job) -> None:
    """GPU-only settings fail here, in one sentence, instead of deep inside a library."""
    training = job.training
    cuda = torch.cuda.is_available()
    if training["attn_implementation"] == "flash_attention_2" and not cuda:
        raise ConfigError(
            "training.attn_implementation is flash_attention_2, which needs a CUDA GPU; use sdpa on this machine."
        )
    if training["dtype"] == "float16" and not cuda:
        raise ConfigError(
            "training.dtype is float16, which needs a CUDA GPU for mixed precision; use float32 or bfloat16 on this "
            "machine."
        )
    if job.launch:
        launch = job.launcher["accelerate"]
        if not launch.get("use_cpu", False) and not cuda:
            raise ConfigError(
                f"methods.{job.method}.accelerate_config is {job.accelerate_config!r}, which runs on GPUs, but none "
                "is visible; "
                "use zero3_cpu for full fine-tuning on a CPU-only machine."
            )
        per_node = job.processes // job.nodes
        if not launch.get("use_cpu", False) and per_node > torch.cuda.device_count():
            raise ConfigError(
                f"the resources table asks for {per_node} training processes on each node "
                f"but {torch.cuda.device_count()} GPUs are visible; "
                "lower resources.train gpu/processes for this size and method."
            )


def resolve(config: tb_config.Experiment, task: str, model: str, run: str, out_dir: Path, data_dir: Path) -> Job:
    item = config.run(task, model, run, finetuned=True)
    training = dict(item.training)
    training["dtype_requested"] = training["dtype"]
    training["dtype"] = hardware.training_dtype(training["dtype"])
    settings = config.method_settings(item)
    if training["batching"] == "pad_to" and training["pad_to"] < training["max_length"]:
        raise ConfigError(
            f"training.pad_to is {training['pad_to']} but max_length is {training['max_length']}; "
            "rows cannot be padded to less than the longest example, so raise pad_to or lower max_length."
        )
    rows = config.resources("train", model, item.method)
    hardware.require_gpus(rows["gpu"], config.resources_key("train", model, item.method))
    processes = rows["processes"]
    out_dir = Path(out_dir)
    init_checkpoint = None
    if item.init_from:
        first_task, first_run = item.init_from
        first = out_dir.parent.parent.parent / first_task / model / first_run
        if not (first / "best.json").is_file():
            raise ConfigError(
                f"this run starts from {first}, which has not finished training; train "
                f"{first_task}/{model}/{first_run} first."
            )
        init_checkpoint = str(first / "checkpoint")
    data = {}
    for split in SPLITS:
        path = Path(data_dir) / f"{split}.jsonl"
        if not path.is_file():
            raise DataError(
                f"{path} does not exist; run `tunebench data` (or the workflow's data rule) for task {task} first."
            )
        data[split] = {"path": str(path), "sha256": sha256_file(path)}
    launch = methods.get(item.method).launches_always or processes > 1
    job = Job(
        spec=item,
        definition=config.tasks.get(task),
        base_source=models.model_source(config, model, "base"),
        training=training,
        method_settings=settings,
        init_checkpoint=init_checkpoint,
        nodes=rows["nodes"],
        processes=processes,
        threads_per_node=rows["threads"],
        accelerate_config=settings["accelerate_config"],
        launch=launch,
        data=data,
        settings_hash=tb_digests.train_hash(config, task, model, run),
        launcher=backend.launcher_settings(settings["accelerate_config"]) if launch else None,
    )
    _check_hardware(job)
    return job


# How the run is spread over machines: a resume state is tied to it (ZeRO-3 shards and RNG states
# are per rank), so a change is refused rather than silently discarded like other settings.
LAYOUT = ("nodes", "processes", "threads_per_node")


def fingerprint(job: Job) -> str:
    """The settings and the training code a resume state belongs to: a state saved by other code (whose
    saved fields may differ) is discarded like one saved under other settings."""
    settings = {key: value for key, value in job.to_dict().items() if key not in LAYOUT}
    settings["code"] = tb_digests.train_code(job.definition)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def layout(job: Job) -> dict:
    return {"nodes": job.nodes, "processes": job.processes}
