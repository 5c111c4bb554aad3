"""The LoRA adapters on a base model quantised to 4-bit NF4 by bitsandbytes."""

from typing import Any

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

    def memory(self, model: Any, settings: dict[str, Any], layout: Any) -> tuple[float, float, str]:
        """The 4-bit base (accelerate's int4 sizes) and the LoRA states, one replica per GPU."""
        import torch
        from accelerate.utils import CustomDtype, compute_module_sizes

        _, trainable, largest = layout.counts(model)
        # bitsandbytes quantises the decoder's linear layers; embeddings, norms and the output layer stay as they are.
        kept = {
            name: getattr(torch, settings["compute_dtype"])
            for name, _ in model.named_parameters()
            if any(part in name for part in ("embed_tokens", "lm_head", "norm"))
        }
        base = compute_module_sizes(model, dtype=CustomDtype.INT4, special_dtypes=kept)[""]
        adapter_gpu, adapter_cpu = layout.single(trainable, largest)
        return (
            base + adapter_gpu,
            adapter_cpu,
            f"4-bit base (accelerate int4 sizes) + {trainable / 1e6:.0f}M LoRA states, one replica per GPU",
        )
