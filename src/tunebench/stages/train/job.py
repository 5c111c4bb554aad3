"""Resolve one training run from the config: every setting the run uses, checked before any work.

The result is a frozen :class:`Job`, written as the run's ``config.json``; its hash (with the data
files') decides whether an existing resume state belongs to this run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ... import config as tb_config
from ...config import digests as tb_digests
from ...tasks.data import sha256_file
from ...util import hardware
from ...util.errors import ConfigError, DataError
from .. import models
from . import backend, methods

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class Job:
    """One resolved training run. The nested settings stay plain dicts: they are written as they are."""

    task: str
    model: str
    method: str
    run: str
    format: str
    stage: str  # finetuned or two_stage
    seed: int
    base_source: dict
    training: dict  # the config's training section merged with the entry's, dtype resolved for this machine
    method_settings: dict
    init_from: dict | None  # {"task", "run"} of the first stage of a two-stage run
    init_checkpoint: str | None
    nodes: int
    processes: int
    threads_per_node: int
    accelerate_config: str  # full fine-tuning always runs under its DeepSpeed file; LoRA/QLoRA when data-parallel
    launch: bool
    data: dict  # split -> {"path", "sha256"}
    settings_hash: str  # what the workflow's stamp and param for this run hold; run.json repeats it
    launcher: dict | None = None  # the accelerate and DeepSpeed files of a launched job

    def to_dict(self) -> dict:
        """The job as config.json holds it (``launcher`` only for a launched job)."""
        fields = dataclasses.asdict(self)
        if fields["launcher"] is None:
            del fields["launcher"]
        return fields


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


def resolve(config: Mapping[str, Any], task: str, model: str, run: str, out_dir: Path, data_dir: Path) -> Job:
    item = tb_config.find_finetune(config, task, model, run)
    training = dict(item.training)
    training["dtype_requested"] = training["dtype"]
    training["dtype"] = hardware.training_dtype(training["dtype"])
    settings = tb_config.method_settings(config, item)
    if training["batching"] == "pad_to" and training["pad_to"] < training["max_length"]:
        raise ConfigError(
            f"training.pad_to is {training['pad_to']} but max_length is {training['max_length']}; "
            "rows cannot be padded to less than the longest example, so raise pad_to or lower max_length."
        )
    rows = tb_config.resources(config, "train", model, item.method)
    hardware.require_gpus(rows["gpu"], tb_config.resources_key(config, "train", model, item.method))
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
        task=task,
        model=model,
        method=item.method,
        run=run,
        format=item.format,
        stage=item.stage,
        seed=training["seed"],
        base_source=models.model_source(config, model, "base"),
        training=training,
        method_settings=settings,
        init_from={"task": item.init_from[0], "run": item.init_from[1]} if item.init_from else None,
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
    settings["code"] = tb_digests.train_code(job.task)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def layout(job: Job) -> dict:
    return {"nodes": job.nodes, "processes": job.processes}
