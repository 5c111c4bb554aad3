"""A run's model under its method (:mod:`tunebench.stages.train.methods`): what is loaded, what is
trained, what the checkpoint holds. A method either trains every parameter (the loop runs it under
DeepSpeed ZeRO-3) or PEFT adapters on a frozen base, which it may load quantised to 4 bits.

When the prompt format adds tokens, the embedding (and untied output) rows of those tokens are
trained as well under LoRA/QLoRA through PEFT's ``trainable_token_indices``; otherwise the new tokens
would keep the random rows the resize gave them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import formats, models
from . import methods
from .job import Job


@dataclass
class Built:
    model: Any
    tokenizer: Any
    new_token_ids: list[int]
    trainable_params: int
    total_params: int


def _count(model) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):  # PEFT counts 4-bit weights at their real size
        return model.get_nb_trainable_parameters()
    numel = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    return sum(n for n, trained in numel if trained), sum(n for n, _ in numel)


def _module_name(model, module) -> str:
    return next(name for name, candidate in model.named_modules() if candidate is module)


def token_row_targets(model, new_ids: list[int]) -> dict[str, list[int]]:
    """PEFT ``trainable_token_indices`` for the new tokens: input embedding, and output rows if untied."""
    targets = {_module_name(model, model.get_input_embeddings()).split(".")[-1]: list(new_ids)}
    output = model.get_output_embeddings()
    if output is not None and output.weight is not model.get_input_embeddings().weight:
        targets[_module_name(model, output).split(".")[-1]] = list(new_ids)
    return targets


def lora_config(preset: Mapping[str, Any], token_targets: dict[str, list[int]] | None, **options: Any):
    """PEFT's LoraConfig of a preset; ``options`` are the method's own keywords (``use_dora``)."""
    from peft import LoraConfig

    return LoraConfig(
        r=preset["r"],
        lora_alpha=preset["alpha"],
        lora_dropout=preset["dropout"],
        bias=preset["bias"],
        target_modules=list(preset["target_modules"]),
        task_type="CAUSAL_LM",
        trainable_token_indices=token_targets or None,
        **options,
    )


def _gathered(weights):
    """A context in which ``weights`` are whole on every rank: under ZeRO-3 each rank holds a shard."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(weights, modifier_rank=0)


@contextlib.contextmanager
def _token_rows_gathered_on_cpu():
    """Let PEFT set up ``trainable_token_indices`` under ZeRO-3 in CPU processes (gloo).

    PEFT copies the new tokens' rows out of the partitioned embedding into a tensor on
    ``torch.cuda.current_device()``, which fails where there is no CUDA. Inside the gather every rank
    holds the whole matrix, so each takes the rows where the weight lives; rank 0's are broadcast as
    PEFT does. GPU processes keep PEFT's own code.
    """
    if torch.cuda.is_available():
        yield
        return
    import torch.distributed as dist
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    from peft.utils.integrations import gather_params_ctx

    def collect(self, weight, rows, embed_dim):
        with gather_params_ctx([weight], modifier_rank=None):
            token_weights = weight[rows].clone()
        dist.broadcast(token_weights, src=0)
        return token_weights

    original = TrainableTokensLayer._collect_token_weights
    TrainableTokensLayer._collect_token_weights = collect
    try:
        yield
    finally:
        TrainableTokensLayer._collect_token_weights = original


def start_end_marker_as_eos(model, tokenizer, added: list[str]) -> None:
    """Give the new end-of-answer marker the rows of the tokenizer's end-of-sequence token.

    A marker drawn around the mean embedding starts with a log-probability near that of any rare
    token (about -8 after a finished answer on SmolLM2), and a short full fine-tuning at a rate meant
    for the other weights never lifts it: generation then runs past the answer to the token limit.
    Starting from the end-of-sequence rows, the model already ends an answer with the marker; only
    the input and output rows of that one token change, the prompt markers keep their mean start.
    """
    if formats.END_A not in added or tokenizer.eos_token_id is None:
        return
    marker, eos = tokenizer.convert_tokens_to_ids(formats.END_A), tokenizer.eos_token_id
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not matrices[0]:
        matrices.append(output.weight)
    with _gathered(matrices), torch.no_grad():
        for weight in matrices:
            weight[marker] = weight[eos]


def build(job: Job, device: torch.device) -> Built:
    """Tokenizer and model of a resolved training job (see :mod:`tunebench.stages.train.job`), ready to train."""
    method, settings, training = methods.get(job.method), job.method_settings, job.training
    dtype = models.WEIGHT_DTYPES[training["dtype"]]
    init_dir = job.init_checkpoint
    with models.source_errors(f"models.{job.model}.base", job.base_source):
        tokenizer = models.load_tokenizer({"local": init_dir} if init_dir else job.base_source)
    added = formats.added_tokens(job.format)
    tokenizer.add_tokens(added, special_tokens=True)  # a no-op for tokens a first stage already added
    new_ids = tokenizer.convert_tokens_to_ids(added)

    quantization = models.bnb_config(settings) if method.quantized else None
    if not method.adapter and init_dir:
        source = {"local": init_dir}
    else:
        source = job.base_source
    with models.source_errors(f"models.{job.model}.base", source):
        model = models.load_model(
            source,
            dtype=dtype,
            quantization=quantization,
            attn_implementation=training["attn_implementation"],
            device=device,
            training=True,
        )
    if model.get_input_embeddings().num_embeddings != len(tokenizer):
        torch.manual_seed(job.seed)  # the resize draws the new rows around the mean of the old ones
        model.resize_token_embeddings(len(tokenizer))
        start_end_marker_as_eos(model, tokenizer, added)
    if training["gradient_checkpointing"]:
        model.config.use_cache = False

    if not method.adapter:
        if training["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return Built(model, tokenizer, new_ids, *_count(model))

    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    if quantization is not None:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=training["gradient_checkpointing"],
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif training["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if init_dir:
        # Two-stage: the first stage's adapter (and its token rows) keeps training.
        model = PeftModel.from_pretrained(model, init_dir, is_trainable=True)
    else:
        preset = settings["lora"]
        train_rows = preset["train_new_token_rows"] and new_ids
        targets = token_row_targets(model, new_ids) if train_rows else None
        with _token_rows_gathered_on_cpu():
            model = get_peft_model(model, lora_config(preset, targets, **method.peft_options))
    if quantization is None and training["dtype"] == "bfloat16_autocast":
        frozen_linears_to(model, torch.bfloat16)
    return Built(model, tokenizer, new_ids, *_count(model))


#: Largest per-token loss difference of a training step between compiled and eager layers that still counts as
#: the same computation: inductor fuses the norms' and activations' float32 arithmetic in another order, so sums
#: round differently (1e-6 on SmolLM2's first ViGGO steps, tunebench bench).
COMPILED_LOSS_TOLERANCE = 1e-4


def compile_layers(model) -> int:
    """Compile each decoder layer of ``model`` in place with torch.compile (inductor); returns how many.

    Layer by layer rather than the whole model: the layers share one compiled graph (their weights are
    its inputs), so compiling takes about a minute on two cores instead of many; and the whole forward
    breaks its graph anyway where ``logits_to_keep`` selects the target positions (a data-dependent
    shape). ``dynamic=True`` because packed rows differ in length from batch to batch. Compiling in
    place keeps the module tree, so state dicts, checkpoints and exports carry the same keys as eager.
    """
    import torch._inductor.config
    from transformers.modeling_layers import GradientCheckpointingLayer

    # Inductor would draw dropout masks from its own generator; eager's keeps a LoRA run with dropout on the
    # eager run's masks, and the generator state saved for resume then covers them.
    torch._inductor.config.fallback_random = True
    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def frozen_linears_to(model, dtype: torch.dtype) -> None:
    """Store the frozen weights of the adapted linear layers in ``dtype``, the dtype autocast computes in.

    Autocast casts a float32 weight to bfloat16 on every call and caches the cast only for weights
    that require gradients, so a frozen base layer was converted again in every forward (a tenth of a
    LoRA step on CPU, torch.profiler). Casting once gives the same bfloat16 values, hence the same
    results. Embeddings and norms are left alone: autocast does not compute them in bfloat16.
    """
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            if not weight.requires_grad and weight.dtype != dtype:
                weight.data = weight.data.to(dtype)


def checkpoint_meta(job: Job, new_ids: list[int]) -> dict:
    """What :func:`tunebench.stages.models.load_for_inference` needs to rebuild the model around a checkpoint."""
    return {
        "method": job.method,
        "format": job.format,
        "base_source": job.base_source,
        "quantization": {k: job.method_settings[k] for k in ("quant_type", "double_quant", "compute_dtype")}
        if methods.get(job.method).quantized
        else None,
        "added_tokens": formats.added_tokens(job.format),
        "new_token_ids": new_ids,
    }


def sort_adapter_modules(directory: Path) -> None:
    """Rewrite adapter_config.json with its module lists sorted: PEFT keeps them as sets and writes
    them in set order, which changes with the hash seed, so identical runs gave different bytes."""
    path = directory / "adapter_config.json"
    if not path.is_file():
        return
    adapter = json.loads(path.read_text())
    for key in ("target_modules", "exclude_modules", "modules_to_save"):
        if isinstance(adapter.get(key), list) and all(isinstance(item, str) for item in adapter[key]):
            adapter[key] = sorted(adapter[key])
    path.write_text(json.dumps(adapter, indent=2, sort_keys=True))  # PEFT's own layout


def export(
    unwrapped,
    tokenizer,
    directory: Path,
    meta: Mapping[str, Any],
    state_dict=None,
    is_main: bool = True,
    save_function=torch.save,
) -> None:
    """Write the selected checkpoint: full weights (safetensors) or the adapter, plus the tokenizer.

    ``state_dict`` is the gathered full state under ZeRO-3 (every rank calls; only the main one writes).
    """
    if not methods.get(meta["method"]).adapter:
        unwrapped.save_pretrained(
            directory,
            state_dict=state_dict,
            is_main_process=is_main,
            save_function=save_function,
            safe_serialization=True,
        )
    elif is_main:
        trained_rows = any("trainable_tokens" in name for name, _ in unwrapped.named_parameters())
        # Untrained new-token rows are random: keep the whole resized embeddings so inference sees the same ones.
        # Under ZeRO-3 (sharded LoRA) the adapter weights are partitioned: peft picks them from the gathered state.
        whole_embeddings = bool(meta["new_token_ids"]) and not trained_rows
        unwrapped.save_pretrained(directory, state_dict=state_dict, save_embedding_layers=whole_embeddings)
        sort_adapter_modules(Path(directory))
    if is_main:
        tokenizer.save_pretrained(directory)
        (directory / models.CHECKPOINT_META).write_text(json.dumps(dict(meta), indent=2) + "\n")
