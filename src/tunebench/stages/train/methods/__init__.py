"""The fine-tuning methods, one module each, found here rather than listed anywhere.

A method module defines one :class:`Method` subclass and nothing else has to name it: the config's
schema and checks, the run's model wrapping and export (:mod:`tunebench.stages.train.wrap`), the
memory estimate of :mod:`tunebench.machinery.fit`, and the labels, colours, order and method table of
the results all read :data:`REGISTRY`. The modules import nothing heavy, so the results stage lists
methods without loading torch.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module
from typing import Any, ClassVar


def section(description: str, learning_rate: float, **properties: dict[str, Any]) -> dict[str, Any]:
    """A method's schema: its own keys (JSON schema, defaults included) beside the peak learning rate."""
    rate = {"type": "number", "exclusiveMinimum": 0, "default": learning_rate, "description": "Peak learning rate."}
    return {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "description": description,
        "properties": {"learning_rate": rate, **properties},
    }


def lora_preset(default: str) -> dict[str, Any]:
    return {"type": "string", "default": default, "description": "Name of an entry in lora_presets."}


def launch_file(default: str, description: str = "used when a job has more than one process") -> dict[str, Any]:
    return {
        "type": "string",
        "default": default,
        "description": f"File in config/accelerate/ (without .yaml) {description}.",
    }


class Method:
    """One fine-tuning method: how results name and draw it, what the config holds, how it wraps the model."""

    name: ClassVar[str]
    #: How tables, figures and the paper name it.
    label: ClassVar[str]
    #: Its colour in every figure; the order of the registry is the order of tables and legends.
    colour: ClassVar[str]
    order: ClassVar[int]
    #: The base model stays frozen and PEFT adapters are trained (and exported) instead.
    adapter: ClassVar[bool] = False
    #: The frozen base is loaded in 4 bits (bitsandbytes); the config then holds the quantisation keys.
    quantized: ClassVar[bool] = False
    #: Keywords of PEFT's LoraConfig beyond the preset's (e.g. ``use_dora``).
    peft_options: ClassVar[dict[str, Any]] = {}
    #: The JSON schema of the method's section under ``methods`` (defaults included).
    schema: ClassVar[dict[str, Any]]

    @property
    def launches_always(self) -> bool:
        """Whether a single-process run still goes through ``accelerate launch`` (DeepSpeed needs it)."""
        return not self.adapter

    def memory(self, model: Any, settings: dict[str, Any], layout: Any) -> tuple[float, float, str]:
        """(GPU bytes per device, host bytes per node, what was estimated) of training ``model``, built on the
        meta device, over ``layout`` (the backend's :class:`~tunebench.stages.train.backend.Layout`). Here:
        adapters trained on a frozen base, which ZeRO-3 shards like the adapters."""
        total, trainable, largest = layout.counts(model)
        if layout.zero is None:
            return layout.replica(total - trainable, trainable, largest)
        frozen_gpu, frozen_cpu = layout.sharded_frozen(total - trainable, largest)
        train_gpu, train_cpu = layout.sharded(trainable, largest)
        return (
            frozen_gpu + train_gpu,
            frozen_cpu + train_cpu,
            f"ZeRO-3 sharded frozen base + {trainable / 1e6:.0f}M LoRA states",
        )


def _discover() -> dict[str, Method]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = import_module(f"{__name__}.{info.name}")
        found += [
            value()
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Method) and value.__module__ == module.__name__
        ]
    return {method.name: method for method in sorted(found, key=lambda method: method.order)}


#: Every method by name, in display order.
REGISTRY: dict[str, Method] = _discover()


def get(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known methods are {', '.join(REGISTRY)}") from None


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)
