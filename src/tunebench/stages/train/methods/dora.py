"""DoRA: LoRA whose update is split into a direction and a trained magnitude per output feature
(PEFT's ``use_dora``), on a frozen base model."""

from . import Method, launch_file, lora_preset, section


class Dora(Method):
    name = "dora"
    label = "DoRA"
    colour = "#C44E52"
    order = 3
    adapter = True
    peft_options = {"use_dora": True}
    schema = section(
        "PEFT DoRA (weight-decomposed LoRA) on a frozen base model.",
        learning_rate=1.0e-4,
        lora=lora_preset("template"),
        accelerate_config=launch_file("ddp"),
    )
