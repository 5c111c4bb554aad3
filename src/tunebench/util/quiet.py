"""Library messages that say nothing about a tunebench job, dropped where they are raised.

Each one printed in every job log, so a reader learnt to skip the log's head and missed real warnings.
Only these exact messages go; every other message of the same loggers still reaches the log.
"""

from __future__ import annotations

import logging
import re
import warnings

#: logger name → the start of the message dropped from it, and why it is noise.
LOG_MESSAGES = {
    # peft imports bitsandbytes for every LoRA job; on an AVX512-BF16 CPU bitsandbytes then looks for the optional
    # `kernels` package and, without it, uses its own CPU kernel: the run is unaffected (run.json records the path).
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward",
    # DeepSpeed on a host without a GPU; run.json records the device the job used.
    "DeepSpeed": "Setting accelerator to CPU.",
}

#: (category, start of the message) of the warnings ignored.
WARNINGS = (
    # peft reads the deprecated `is_gradient_checkpointing` property of every model it wraps.
    (FutureWarning, "`is_gradient_checkpointing` is deprecated"),
    # DeepSpeed's ZeRO-3 calls torch's old collective names, once for each call site in each process.
    (FutureWarning, "`torch.distributed.all_gather_into_tensor` is deprecated"),
    (FutureWarning, "`torch.distributed.reduce_scatter_tensor` is deprecated"),
)


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


_FILTERS = {name: _DropMessage(start) for name, start in LOG_MESSAGES.items()}


def install() -> None:
    """Drop the known messages in this process; call before the libraries are imported (idempotent)."""
    for name, message_filter in _FILTERS.items():
        logging.getLogger(name).addFilter(message_filter)  # a filter already there is not added twice
    for category, start in WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(start), category=category)
