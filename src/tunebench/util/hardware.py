"""The machine facts that can change a number, and the one kernel choice tunebench makes from them.

Machines of one kind do not all have the same CPU. bitsandbytes picks its CPU 4-bit kernel by the
CPU: with AVX512_BF16 it repacks a 4-bit layer's weights on the first no-grad forward in eval mode
and computes in bfloat16 (``avx512_bf16``); elsewhere it dequantises to the compute dtype and runs an
ordinary matmul (``portable``). The two paths round differently, so QLoRA predictions can differ
between machines. ``TUNEBENCH_BNB_CPU_KERNEL=portable`` makes every machine take the portable path;
``auto`` (the default) lets bitsandbytes choose. Every run.json and metrics.json records
:func:`describe`, so a table row says which path produced it.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError

BNB_CPU_KERNEL_ENV = "TUNEBENCH_BNB_CPU_KERNEL"
BNB_CPU_KERNELS = ("auto", "portable")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bnb_cpu_kernel_choice() -> str:
    """``auto`` or ``portable``, from the environment; anything else is a one-sentence error."""
    value = os.environ.get(BNB_CPU_KERNEL_ENV, "auto").strip() or "auto"
    if value not in BNB_CPU_KERNELS:
        raise ConfigError(f"{BNB_CPU_KERNEL_ENV} is {value!r} but must be one of {', '.join(BNB_CPU_KERNELS)}.")
    return value


def bnb_has_avx512_bf16() -> bool:
    """Whether bitsandbytes' CPU library reports (and so will use) its AVX512-BF16 4-bit kernel."""
    try:
        from bitsandbytes.functional import has_avx512bf16
    except ImportError:
        return False
    return bool(has_avx512bf16())


def bnb_cpu_kernel() -> str:
    """The CPU 4-bit kernel path 4-bit layers loaded now for inference take: ``avx512_bf16`` or ``portable``."""
    if bnb_cpu_kernel_choice() == "portable":
        return "portable"
    return "avx512_bf16" if bnb_has_avx512_bf16() else "portable"


def apply_bnb_cpu_kernel(model, training: bool = False) -> Any:
    """Hold every 4-bit layer of ``model`` to the chosen CPU kernel path; returns the model.

    bitsandbytes decides per layer through ``support_avx512bf16_for_cpu``, set from the CPU when the
    layer is built; turning it off is the library's own portable path (dequantise, then matmul).
    A model being trained always takes the portable path: the AVX512-BF16 repacking happens on the
    first no-grad forward in eval mode (a validation pass) and stays, and the packed kernel passes
    no gradient back to its input, so every later epoch would silently train the adapters below a
    4-bit layer through the residual stream alone.
    """
    if not training and bnb_cpu_kernel() != "portable":
        return model
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return model
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
    return model


def packed_4bit_layers(model) -> int:
    """How many 4-bit layers bitsandbytes has repacked for its AVX512-BF16 kernel (0 on the portable path)."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    return sum(
        1
        for module in model.modules()
        if isinstance(module, Linear4bit)
        and getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False)
    )


def describe() -> dict:
    """What of this machine and its libraries can change a result: recorded in run.json and metrics.json."""
    import torch

    flags = cpu_flags()
    facts: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": {name: name in flags for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")},
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import bitsandbytes

        facts["bitsandbytes"] = bitsandbytes.__version__
        facts["bnb_cpu_4bit_kernel"] = bnb_cpu_kernel()
    except ImportError:
        facts["bitsandbytes"] = None
    return facts


def describe_run(model) -> dict:
    """:func:`describe`, plus the 4-bit kernel path this model's layers actually took (when it has any)."""
    facts = describe()
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return facts
    if any(isinstance(module, Linear4bit) for module in model.modules()):
        on_cpu = next(model.parameters()).device.type == "cpu"
        facts["bnb_4bit_kernel_used"] = (
            ("avx512_bf16" if packed_4bit_layers(model) else "portable") if on_cpu else "cuda"
        )
    return facts


def training_dtype(requested: str) -> str:
    """``training.dtype`` with ``auto`` resolved from the hardware this process sees.

    A CUDA GPU with bfloat16 trains in bfloat16; a CPU whose matmul units take bfloat16 (AVX512_BF16 or
    AMX) keeps float32 weights and computes under bfloat16 autocast, about twice as fast as float32 on
    such a CPU; any other CPU stays in float32, where autocast would emulate bfloat16 and run slower.
    """
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    flags = cpu_flags()
    return "bfloat16_autocast" if {"avx512_bf16", "amx_bf16"} & flags else "float32"
