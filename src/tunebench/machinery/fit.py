"""Pre-flight fit check: does every training and evaluation job of a config fit the hardware it declares?

Model shapes come from each model's ``config.json`` (a local directory, the GGUF header, the hub, or
the copies of the Llama-2 configs shipped in ``resources/model_configs``), never from weights: the
model is built on the meta device with accelerate's ``init_empty_weights``.

Training memory is each method's own estimate (``Method.memory``) over the backend's ZeRO-3 arithmetic
(``backend.Layout``), which is DeepSpeed's: ``estimate_zero3_model_states_mem_needs`` (the function
behind ``estimate_zero3_model_states_mem_needs_all_cold``) gives per-GPU and per-node host memory of the
ZeRO-3 model states for the job's nodes × GPUs and the offload settings of its DeepSpeed file. Frozen
weights (LoRA's base) are ZeRO-3 states without optimizer on the GPU, so the same estimator with
``cpu_offload=True`` prices them; an unsharded (data-parallel) job is the estimator on one GPU.
QLoRA's 4-bit base is sized by accelerate's ``compute_module_sizes`` in
``int4``. Evaluation is accelerate's ``infer_auto_device_map`` of the model in its inference dtype
over the job's GPUs. Activations are not model states: ``ACTIVATION_RESERVE`` of each GPU is kept
for them, and a job fits when its states fit the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources as package_files
from pathlib import Path
from typing import Any

from .. import config as tb_config
from ..stages.train import backend, methods
from ..util.errors import ConfigError

# Share of each GPU left for activations, the CUDA context and allocator slack (batch 16 × 512
# tokens with gradient checkpointing stays well inside it on the paper's sizes).
ACTIVATION_RESERVE = 0.2
GB = 1e9
MB = 1e6


@dataclass(frozen=True)
class Fit:
    """One job's estimate against its declared hardware."""

    kind: str  # train or evaluate
    job: str  # task/model/run
    nodes: int
    gpus_per_node: int
    gpu_model: str | None
    gpu_gb: float  # estimated GPU memory per device (0 for CPU jobs)
    host_gb: float  # estimated host memory per node
    gpu_limit_gb: float | None  # usable GPU memory per device (None for CPU jobs)
    host_limit_gb: float  # the row's mem_mb
    how: str  # what was estimated

    @property
    def problems(self) -> list[str]:
        found = []
        if self.gpu_limit_gb is not None and self.gpu_gb > self.gpu_limit_gb:
            short = self.gpu_gb - self.gpu_limit_gb
            found.append(
                f"needs {self.gpu_gb:.1f} GB on each GPU but a {self.gpu_model} leaves {self.gpu_limit_gb:.1f} GB "
                f"after the {ACTIVATION_RESERVE:.0%} activation reserve (short by {short:.1f} GB)"
            )
        if self.host_gb > self.host_limit_gb:
            found.append(
                f"needs {self.host_gb:.1f} GB of host memory per node but mem_mb grants {self.host_limit_gb:.1f} GB "
                f"(short by {self.host_gb - self.host_limit_gb:.1f} GB)"
            )
        return found

    def refusal(self) -> str:
        """One sentence naming the job, its hardware and the shortfall."""
        hardware = f"{self.nodes} node{'s' if self.nodes > 1 else ''} × {self.gpus_per_node} {self.gpu_model or 'GPU'}"
        return (
            f"{self.kind} job {self.job} on {hardware} {' and '.join(self.problems)}; "
            f"give it more GPUs or nodes in resources.{self.kind}."
        )


def model_config_dict(source: Mapping[str, Any]) -> dict:
    """The ``config.json`` of a model source, read without touching weights."""
    from ..stages import models  # torch: only when a plan is made, not when the workflow is parsed

    kind = models.source_kind(source)
    if kind == "local":
        path = Path(source["local"]).expanduser() / "config.json"
        if not path.is_file():
            raise ConfigError(
                f"{path} does not exist; a local model directory needs its config.json for tunebench plan."
            )
        return json.loads(path.read_text())
    if kind == "random_llama":
        settings = {k: v for k, v in source["random_llama"].items() if k != "seed"}
        return {"model_type": "llama", "vocab_size": len(models.load_tokenizer(source)), **settings}
    if kind == "gguf_package":
        from transformers import AutoConfig

        directory, name = models.gguf_location(source)
        return AutoConfig.from_pretrained(directory, gguf_file=name).to_dict()
    shipped = (
        package_files.files("tunebench") / "resources" / "model_configs" / f"{source['hub'].replace('/', '--')}.json"
    )
    if shipped.is_file():
        return json.loads(shipped.read_text())
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            source["hub"],
            "config.json",
            revision=source.get("revision") or None,
            token=os.environ.get(models.TOKEN_ENV) or None,
        )
    except Exception as error:  # any hub failure (offline, gated, missing) has the same remedy
        raise ConfigError(
            f"the config.json of {source['hub']} cannot be read from the hub ({type(error).__name__}); "
            "export HF_TOKEN for a gated model or point the model at a local directory."
        ) from None
    return json.loads(Path(path).read_text())


def empty_model(source: Mapping[str, Any], lora: Mapping[str, Any] | None = None):
    """The model of ``source`` on the meta device (with LoRA adapters when ``lora`` is given)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(model_config_dict(source))
    model_type = settings.pop("model_type")
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings))
        if lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], target_modules=list(lora["target_modules"]))
            )
    return model


def train_estimate(
    config: tb_config.Experiment, run: tb_config.Run, rows: Mapping[str, Any]
) -> tuple[float, float, str]:
    """(GPU bytes per device, host bytes per node, what was estimated) of one training job: its method's
    estimate over the job's layout."""
    settings = config.method_settings(run)
    method = methods.get(run.method)
    model = empty_model(config["models"][run.model]["base"], settings["lora"] if method.adapter else None)
    multi = method.launches_always or rows["processes"] > 1
    zero = backend.zero3_settings(settings["accelerate_config"]) if multi else None
    return method.memory(model, settings, backend.Layout(rows["processes_per_node"], rows["nodes"], zero))


def eval_estimate(
    config: Mapping, model_name: str, rows: Mapping[str, Any], usable_bytes: float | None
) -> tuple[float, float, str]:
    """(GPU bytes on the fullest device, host bytes, what was estimated) of one evaluation job."""
    from accelerate.utils import compute_module_sizes, infer_auto_device_map

    from ..stages import models

    model = empty_model(config["models"][model_name].get("chat") or config["models"][model_name]["base"])
    dtype = models.inference_dtype(config)
    sizes = compute_module_sizes(model, dtype=dtype)
    if not rows["gpu"]:
        return 0.0, float(sizes[""]), "whole model in host memory"
    device_map = infer_auto_device_map(
        model,
        max_memory={i: int(usable_bytes) for i in range(rows["gpu"])} | {"cpu": 10**18},
        no_split_module_classes=model._no_split_modules,
        dtype=dtype,
    )
    per_device: dict[Any, float] = {}
    for name, device in device_map.items():
        per_device[device] = per_device.get(device, 0) + sizes[name]
    spilled = sum(v for k, v in per_device.items() if not isinstance(k, int))
    fullest = max((v for k, v in per_device.items() if isinstance(k, int)), default=0.0)
    # What did not fit on the GPUs counts against the fullest one, so the shortfall shows in GB.
    return (
        fullest + spilled,
        float(sizes[""]),
        f"infer_auto_device_map over {rows['gpu']} GPUs in {dtype}".replace("torch.", ""),
    )


def plan(config: tb_config.Experiment) -> list[Fit]:
    """The fit of every training and evaluation job of a validated config."""
    table = config["resources"]
    fits = []
    jobs = [("train", run, config.resources("train", run.model, run.method)) for run in config.finetune]
    # An API model's baseline loads no weights: nothing to fit.
    evaluated = {
        (run.task, run.model, run.run) for run in config.evaluated if not config["models"][run.model].get("api")
    }
    jobs += [("evaluate", key, config.resources("evaluate", key[1])) for key in sorted(evaluated)]
    cache: dict = {}
    for kind, item, rows in jobs:
        gpu_model = rows.get("gpu_model")
        limit = table["gpu_memory_gb"][gpu_model] * GB * (1 - ACTIVATION_RESERVE) if rows["gpu"] and gpu_model else None
        if kind == "train":
            name = f"{item.task}/{item.model}/{item.run}"
            key = (kind, item.model, item.method, rows["nodes"], rows["processes_per_node"], rows["gpu"])
            if key not in cache:
                cache[key] = train_estimate(config, item, rows)
        else:
            name = "/".join(item)
            key = (kind, item[1], rows["gpu"], limit)
            if key not in cache:
                cache[key] = eval_estimate(config, item[1], rows, limit)
        gpu_bytes, host_bytes, how = cache[key]
        if not rows["gpu"]:
            # CPU jobs keep their "device" states in host memory too.
            host_bytes += gpu_bytes * (rows["processes_per_node"] if kind == "train" else 0)
            gpu_bytes = 0.0
        fits.append(
            Fit(
                kind,
                name,
                rows["nodes"],
                rows["gpu"],
                gpu_model,
                gpu_bytes / GB,
                host_bytes / GB,
                limit / GB if limit else None,
                rows["mem_mb"] * MB / GB,
                how,
            )
        )
    return fits


def render(fits: list[Fit]) -> str:
    header = f"{'job':<46} {'nodes × GPUs':<16} {'GPU GB/dev':>10} {'limit':>7} {'host GB/node':>12} {'mem':>7}"
    lines = [f"{header}  fit  estimate"]
    for fit in fits:
        hardware = f"{fit.nodes} × {fit.gpus_per_node} {fit.gpu_model}" if fit.gpus_per_node else f"{fit.nodes} × cpu"
        limit = f"{fit.gpu_limit_gb:.1f}" if fit.gpu_limit_gb is not None else "-"
        lines.append(
            f"{fit.kind + ' ' + fit.job:<46} {hardware:<16} {fit.gpu_gb:>10.1f} {limit:>7} {fit.host_gb:>12.1f} "
            f"{fit.host_limit_gb:>7.0f}  {'yes' if not fit.problems else 'NO ':<4} {fit.how}"
        )
    return "\n".join(lines)
