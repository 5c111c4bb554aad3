"""Every parameter trained, through Accelerate with DeepSpeed ZeRO-3."""

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
