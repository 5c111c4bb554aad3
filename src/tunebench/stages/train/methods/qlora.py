"""The LoRA adapters on a base model quantised to 4-bit NF4 by bitsandbytes."""

from . import Method, launch_file, lora_preset, section


class Qlora(Method):
    name = "qlora"
    label = "QLoRA"
    colour = "#55A868"
    order = 2
    adapter = True
    quantized = True
    schema = section(
        "LoRA on a base model quantised to 4 bits with bitsandbytes.",
        learning_rate=2.0e-4,
        lora=lora_preset("study_b"),
        quant_type={"type": "string", "enum": ["nf4", "fp4"], "default": "nf4", "description": "4-bit data type."},
        double_quant={"type": "boolean", "default": True, "description": "Quantise the quantisation constants too."},
        compute_dtype={
            "type": "string",
            "enum": ["float32", "bfloat16", "float16"],
            "default": "bfloat16",
            "description": "Dtype of the 4-bit matmuls.",
        },
        accelerate_config=launch_file("ddp"),
    )
