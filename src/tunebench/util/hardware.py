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


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's inductor would build CPU kernels with (``CXX``, else g++), or None."""
    import shutil

    return shutil.which(os.environ.get("CXX") or "g++")


def training_compile(requested: bool | str, *, quantized: bool, deepspeed: bool) -> tuple[bool, str]:
    """``training.compile`` resolved: (compile the decoder layers?, why, in a few words for the log and run.json).

    ``auto`` compiles where it was measured to win: one CPU process, float weights (tunebench bench on two
    cores: SmolLM2 trained 1.2 to 1.6 times as many tokens per CPU second as eager in full fine-tuning and
    about 1.7 times in LoRA, after a first step that compiles for minutes). It stays off
    on GPUs and under DeepSpeed (not measured; ZeRO-3 gathers parameters in hooks that break the
    compiled graph), for 4-bit layers (bitsandbytes' kernels break it) and without a C++ compiler, which
    inductor needs to build CPU kernels. ``true`` without a compiler is refused.
    """
    import torch

    compiler = cpp_compiler()
    if requested is True:
        if compiler is None and not torch.cuda.is_available():
            raise ConfigError(
                "training.compile is true but no C++ compiler (CXX or g++) is on PATH, which torch.compile needs "
                "on a CPU; install g++ (build-essential) or set training.compile to auto or false."
            )
        return True, "asked for"
    if requested is False:
        return False, "asked for"
    if torch.cuda.is_available():
        return False, "not measured on GPUs"
    if deepspeed:
        return False, "not under DeepSpeed"
    if quantized:
        return False, "4-bit layers"
    if compiler is None:
        return False, "no C++ compiler (CXX or g++) for inductor"
    return True, "one CPU process with float weights"


# The oldest Linux driver branch each CUDA release of a torch build runs on (NVIDIA's CUDA toolkit
# release notes, "minimum required driver version"); an older driver makes torch see no GPU at all.
CUDA_DRIVER_BRANCH = {"11.8": 520, "12.1": 530, "12.4": 550, "12.6": 560, "12.8": 570, "12.9": 575, "13.0": 580}


def nvidia_driver() -> str | None:
    """The loaded NVIDIA kernel driver's version (``/proc/driver/nvidia/version``), None without one."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for word in text.split():
        if word[:1].isdigit() and word.count(".") >= 1:
            return word
    return None


def missing_gpus(wanted: int, visible: int, torch_cuda: str | None, driver: str | None, devices: str | None) -> str:
    """Why ``visible`` CUDA devices fall short of ``wanted``, with what to check, as one clause."""
    if torch_cuda is None:
        return "the installed torch is a CPU-only build; install the GPU lock (requirements-gpu.lock) or use the image"
    needs = CUDA_DRIVER_BRANCH.get(".".join(torch_cuda.split(".")[:2]))
    need = f"torch's CUDA {torch_cuda} build needs an NVIDIA driver of the {needs} branch or newer" if needs else ""
    if visible == 0 and driver is None:
        where = "no NVIDIA driver is loaded here (a CPU node, or a container started without apptainer's --nv)"
    elif visible == 0 and needs and int(driver.split(".")[0]) < needs:
        where = f"this node's driver is {driver}, too old"
    else:
        where = f"the driver is {driver}"
    hint = f"CUDA_VISIBLE_DEVICES is {devices!r}" if devices is not None else "CUDA_VISIBLE_DEVICES is unset"
    return f"{visible} CUDA device(s) are visible: {where}" + (f"; {need}" if need else "") + f"; {hint}"


def require_gpus(wanted: int, key: str) -> None:
    """Stop a job whose resources ask for ``wanted`` GPUs on this node before it loads anything,
    instead of letting it run on the CPU until its wall time runs out."""
    if not wanted:
        return
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible >= wanted:
        return
    reason = missing_gpus(wanted, visible, torch.version.cuda, nvidia_driver(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    raise ConfigError(
        f"{key} asks for {wanted} GPU(s) on each node but {reason}; run the job where the GPUs are "
        f"(srun/sbatch on a GPU partition, apptainer --nv) or set gpu: 0 in {key} to run on the CPU."
    )
