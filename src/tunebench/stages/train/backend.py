"""The training backend, Accelerate with DeepSpeed: the only code that reads their files.

A method's ``accelerate_config`` names a file in ``config/accelerate/``; that file may name a DeepSpeed
JSON file (relative to the project root). Here those files are read and recorded with a run, the
DeepSpeed file's ``auto`` keys are filled from the training settings, and what the loop, the
launcher and the fit estimate need to know of them (ZeRO stage, offload) is answered, with the memory
arithmetic of ZeRO-3 that the methods' estimates use (:class:`Layout`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
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


def param_counts(model) -> tuple[int, int, int]:
    """Total and trainable parameters, and the largest layer's own parameters (DeepSpeed's definition)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    largest = max(sum(p.numel() for p in module.parameters(recurse=False)) for module in model.modules())
    return total, trainable, largest


def zero3_states(
    params: int, largest: int, gpus_per_node: int, nodes: int, offload_optimizer: bool, offload_params: bool
) -> tuple[float, float]:
    """(GPU bytes per device, host bytes per node) of ZeRO-3 model states: DeepSpeed's own estimator."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
        params,
        largest,
        num_gpus_per_node=gpus_per_node,
        num_nodes=nodes,
        cpu_offload=offload_optimizer,
        cpu_offload_params=offload_params,
        zero_init=True,
    )
    return gpu, cpu


@dataclass(frozen=True)
class Layout:
    """Where one training job's model states live: its processes per node, its nodes and the ZeRO-3 block
    of its DeepSpeed file (None: every process holds a whole replica). A method's memory estimate asks it."""

    processes_per_node: int
    nodes: int
    zero: Mapping[str, Any] | None

    counts = staticmethod(param_counts)

    def _offloads(self, key: str) -> bool:
        return ((self.zero or {}).get(key) or {}).get("device", "none") == "cpu"

    @property
    def offload_optimizer(self) -> bool:
        return self._offloads("offload_optimizer")

    @property
    def offload_params(self) -> bool:
        return self._offloads("offload_param")

    @property
    def processes(self) -> int:
        return self.nodes * max(1, self.processes_per_node)

    def single(self, params: int, largest: int) -> tuple[float, float]:
        """Trained states held whole on one device."""
        return zero3_states(params, largest, 1, 1, False, False)

    def replica(self, frozen: int, trained: int, largest: int) -> tuple[float, float, str]:
        """Data parallel: every process holds the whole model; its states are ZeRO-3's on one device."""
        frozen_gpu, _ = zero3_states(frozen, largest, 1, 1, True, False)
        _, frozen_cpu = zero3_states(frozen, largest, 1, 1, False, False)
        train_gpu, train_cpu = self.single(trained, largest)
        return (
            frozen_gpu + train_gpu,
            (frozen_cpu + train_cpu) * self.processes_per_node,
            "a whole replica in every process (no ZeRO)",
        )

    def sharded(self, params: int, largest: int) -> tuple[float, float]:
        """Trained states sharded over every process, offloaded as the DeepSpeed file says."""
        devices = max(1, self.processes_per_node)
        return zero3_states(params, largest, devices, self.nodes, self.offload_optimizer, self.offload_params)

    def sharded_frozen(self, params: int, largest: int) -> tuple[float, float]:
        """Weights that are never updated, sharded: ZeRO-3's GPU share without optimizer states (the
        optimizer-offload estimate), and its host share without an offloaded optimizer."""
        devices = max(1, self.processes_per_node)
        gpu, _ = zero3_states(params, largest, devices, self.nodes, True, self.offload_params)
        _, cpu = zero3_states(params, largest, devices, self.nodes, False, self.offload_params)
        return gpu, cpu
