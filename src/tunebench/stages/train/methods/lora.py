"""PEFT LoRA adapters on a frozen base model."""

from . import Method, launch_file, lora_preset, section


class Lora(Method):
    name = "lora"
    label = "LoRA"
    colour = "#DD8452"
    order = 1
    adapter = True
    schema = section(
        "PEFT LoRA on a frozen base model.",
        learning_rate=1.0e-4,
        lora=lora_preset("template"),
        accelerate_config=launch_file("ddp"),
    )
