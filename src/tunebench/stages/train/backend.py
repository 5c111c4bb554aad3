"""The training backend, Accelerate with DeepSpeed: the only code that reads their files.

A method's ``accelerate_config`` names a file in ``config/accelerate/``; that file may name a DeepSpeed
JSON file (relative to the project root). Here those files are read and recorded with a run, the
DeepSpeed file's ``auto`` keys are filled from the training settings, and what the loop, the
launcher and the fit estimate need to know of them (ZeRO stage, offload) is answered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ... import config as tb_config


def accelerate_file(name: str) -> Path:
    return tb_config.ACCELERATE_DIR / f"{name}.yaml"


def deepspeed_file(name: str) -> Path | None:
    """The DeepSpeed file the accelerate file ``name`` names, or None when it runs without DeepSpeed."""
    launch = yaml.safe_load(accelerate_file(name).read_text()) or {}
    path = (launch.get("deepspeed_config") or {}).get("deepspeed_config_file")
    # The accelerate files name their DeepSpeed file relative to the project root, not to the caller.
    return tb_config.ROOT / path if path else None


def launcher_settings(name: str) -> dict:
    """The accelerate file and the DeepSpeed file it names, recorded with the run's settings."""
    path = accelerate_file(name)
    launch = yaml.safe_load(path.read_text()) or {}
    deepspeed_path = deepspeed_file(name)
    deepspeed = json.loads(deepspeed_path.read_text()) if deepspeed_path else None
    return {"accelerate": launch, "deepspeed": deepspeed}


def zero3_settings(name: str | None) -> dict | None:
    """The zero_optimization block of the DeepSpeed file an accelerate file names (None: no ZeRO-3)."""
    path = deepspeed_file(name) if name else None
    if path is None:
        return None
    zero = json.loads(path.read_text()).get("zero_optimization") or {}
    return zero if zero.get("stage") == 3 else None


def fill_deepspeed(accelerator, training: Mapping[str, Any]) -> bool:
    """Give the DeepSpeed file's "auto" batch and clipping keys their values; True under DeepSpeed."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return False
    ds = plugin.deepspeed_config
    values = {
        "train_micro_batch_size_per_gpu": training["batch_size"],
        "gradient_accumulation_steps": training["gradient_accumulation"],
        "train_batch_size": training["batch_size"] * training["gradient_accumulation"] * accelerator.num_processes,
        "gradient_clipping": training["max_grad_norm"] or 0.0,
    }
    for key, value in values.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    # We hand DeepSpeed its CPU Adam ourselves (with the config's betas and eps); accelerate would
    # otherwise rebuild it from lr and weight decay alone.
    ds["zero_force_ds_cpu_optimizer"] = False
    if training["dtype"] == "bfloat16_autocast":
        # DeepSpeed runs the forward itself, so accelerate's autocast never wraps it: the engine's own
        # torch autocast keeps float32 weights and optimizer while linear layers compute in bfloat16.
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return True


def offloads_optimizer(accelerator) -> bool:
    plugin = accelerator.state.deepspeed_plugin
    device = (
        ((plugin.deepspeed_config.get("zero_optimization") or {}).get("offload_optimizer") or {}).get("device", "none")
        if plugin
        else "none"
    )
    return device in ("cpu", "nvme")


def distributed(accelerator) -> dict:
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return {"type": accelerator.distributed_type.name.lower()}
    zero = plugin.deepspeed_config.get("zero_optimization") or {}
    return {
        "type": "deepspeed",
        "zero_stage": zero.get("stage"),
        "offload_optimizer": (zero.get("offload_optimizer") or {}).get("device", "none"),
        "offload_param": (zero.get("offload_param") or {}).get("device", "none"),
    }
