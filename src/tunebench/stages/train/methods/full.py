"""Every parameter trained, through Accelerate with DeepSpeed ZeRO-3."""

from typing import Any

from . import Method, launch_file, section


class Full(Method):
    name = "full"
    label = "Full"
    colour = "#4C72B0"  # seaborn "deep", as are the others
    order = 0
    schema = section(
        "Every parameter trained through Accelerate with DeepSpeed ZeRO-3.",
        learning_rate=5.0e-6,
        accelerate_config=launch_file("zero3_offload", "of every job"),
    )

    def memory(self, model: Any, settings: dict[str, Any], layout: Any) -> tuple[float, float, str]:
        """Every parameter's states, ZeRO-3 sharded over the job's processes (a whole replica without ZeRO)."""
        if layout.zero is None:
            return super().memory(model, settings, layout)
        total, _, largest = layout.counts(model)
        gpu, cpu = layout.sharded(total, largest)
        return (
            gpu,
            cpu,
            f"ZeRO-3 over {layout.processes} processes, "
            f"offload optimizer={layout.offload_optimizer} params={layout.offload_params}",
        )
