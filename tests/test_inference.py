"""Inference that fits: a model spread over devices, the two decoding paths, batch sizes that adapt to memory.

On a CPU host accelerate can still spread a model: ``evaluation.max_memory`` with a small ``cpu``
budget sends the layers that do not fit to ``disk`` (read back at each forward pass), which runs
the same hooks and device map as a model spread over GPUs.
"""

from __future__ import annotations

import copy

import pytest
import torch

from train_support import TINY_LLAMA, one_thread, tiny_config, tokenizer, tokenizer_dir  # noqa: F401  (fixtures)
from tunebench import config as tb_config
from tunebench.stages import evaluate, models
from tunebench.stages.generate import generate
from tunebench.util.errors import ConfigError, UserError

TEXTS = [
    "What is 4821 * 7730?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "The quick brown fox jumps over the lazy dog " * 10,
    "hi",
    "inform(name[Tetris], release_year[1984], genres[puzzle])",
]


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer(text)["input_ids"] for text in TEXTS]


#: The spread model's vocabulary: accelerate keeps room for the largest layer on the main device, and
#: with SmolLM2's 49,152 tokens the embedding and output layer are each larger than every decoder
#: layer together, so no budget splits them. A 256-token vocabulary makes the decoder layers count.
SMALL_VOCAB = 256
SPREAD_LAYERS = 4


def small_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    keys = {k: v for k, v in TINY_LLAMA.items() if k != "seed"}
    torch.manual_seed(TINY_LLAMA["seed"])
    config = LlamaConfig(
        vocab_size=SMALL_VOCAB,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        **dict(keys, num_hidden_layers=SPREAD_LAYERS),
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def saved_model(tokenizer, tmp_path_factory):
    """The small-vocabulary Llama saved in Hugging Face format, as a ``local`` source would name it."""
    directory = tmp_path_factory.mktemp("small-llama")
    small_llama().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def small_prompts(prompts):
    return [[token % SMALL_VOCAB for token in prompt] for prompt in prompts]


def _config(tokenizer_dir, source: dict, max_memory=None) -> dict:
    config = tiny_config(tokenizer_dir)
    config["models"]["tiny"]["base"] = source
    config["evaluation"] = {"max_memory": max_memory}
    return tb_config.validate(config)


def _cpu_budget() -> int:
    """A cpu budget that holds the embedding and about half the decoder layers (plus accelerate's reserve)."""
    model = small_llama()
    embedding = sum(p.numel() * p.element_size() for p in model.get_input_embeddings().parameters())
    layer = sum(p.numel() * p.element_size() for p in model.model.layers[0].parameters())
    return embedding + layer * (SPREAD_LAYERS // 2) + layer + 512


def _check_spread(spread) -> None:
    assert set(spread.hf_device_map.values()) == {"cpu", "disk"}, spread.hf_device_map
    assert spread.hf_device_map["lm_head"] == "disk" and spread.hf_device_map["model.embed_tokens"] == "cpu"
    # Offloaded weights wait on the meta device and are streamed in by accelerate's hooks.
    assert spread.lm_head.weight.device.type == "meta"
    assert evaluate.devices(spread) == "cpu,disk"


@pytest.mark.parametrize("decoder", ["batch_invariant", "generate"])
def test_a_model_spread_over_cpu_and_disk_predicts_what_it_predicts_whole(
    tokenizer_dir,
    tokenizer,
    small_prompts,  # noqa: F811
    saved_model,
    decoder,
):
    source = {"local": str(saved_model)}
    whole, _ = models.load_for_inference(_config(tokenizer_dir, source), "tiny", role="base")
    spread, _ = models.load_for_inference(
        _config(tokenizer_dir, source, {"cpu": _cpu_budget(), "disk": "1GiB"}), "tiny", role="base"
    )
    assert getattr(whole, "hf_device_map", None) is None and evaluate.devices(whole) == "cpu"
    _check_spread(spread)

    expected, _ = generate(whole, tokenizer, small_prompts, max_new_tokens=12, batch_size=4, decoder=decoder)
    actual, _ = generate(spread, tokenizer, small_prompts, max_new_tokens=12, batch_size=4, decoder=decoder)
    assert actual == expected
    assert sum(g.generated_tokens for g in actual) > len(small_prompts)


def test_a_model_built_in_memory_is_dispatched_over_the_same_budget(tokenizer, small_prompts, tmp_path):
    """Random and merged LoRA models exist only in memory: accelerate dispatches them after loading."""
    whole = small_llama()
    expected, _ = generate(whole, tokenizer, small_prompts, max_new_tokens=8, batch_size=2)
    spread = models.dispatch(
        small_llama(), {"max_memory": {"cpu": _cpu_budget(), "disk": "1GiB"}, "offload_folder": str(tmp_path)}
    )
    _check_spread(spread)
    actual, _ = generate(spread, tokenizer, small_prompts, max_new_tokens=8, batch_size=2)
    assert actual == expected


def test_the_generate_path_reads_rows_back_as_the_batch_invariant_path_does(tokenizer, prompts):
    model = models.random_llama(TINY_LLAMA, tokenizer).eval()
    # "ea" ends two of the random model's rows early (inside "Leader" and "Lean"); the others run to the limit.
    stops = ["ea"]
    invariant, _ = generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=1, stop_strings=stops)
    batched, throughput = generate(
        model, tokenizer, prompts, max_new_tokens=10, batch_size=1, stop_strings=stops, decoder="generate"
    )
    assert batched == invariant
    assert {g.stopped for g in batched} == {"stop_string", "length"}
    assert throughput.batch_size == 1 and throughput.prompt_tokens_computed == sum(map(len, prompts))
    with pytest.raises(ValueError, match="decoder must be one of"):
        generate(model, tokenizer, prompts, max_new_tokens=2, batch_size=1, decoder="vllm")


def _memory_cap(model, rows: int):
    """A forward hook that raises the CUDA out-of-memory error for batches of more than ``rows`` rows.

    A CPU has no memory limit to run into; the hook raises what torch raises on a full GPU, at the
    call where the batch would not fit.
    """

    def check(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[0] > rows:
            raise torch.OutOfMemoryError(f"CUDA out of memory at {ids.shape[0]} rows")

    return model.register_forward_pre_hook(check, with_kwargs=True)


@pytest.mark.parametrize("decoder", ["batch_invariant", "generate"])
def test_a_batch_that_runs_out_of_memory_is_retried_at_half_the_size(tokenizer, prompts, decoder):
    model = models.random_llama(TINY_LLAMA, tokenizer).eval()
    expected, _ = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=2, decoder=decoder)
    handle = _memory_cap(model, rows=2)
    try:
        actual, throughput = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=8, decoder=decoder)
        assert throughput.batch_size == 2  # 8 → 4 → 2
        assert actual == expected
    finally:
        handle.remove()
    handle = _memory_cap(model, rows=0)
    try:
        with pytest.raises(UserError, match=r"does not fit the memory of cpu; give the evaluation job more GPUs"):
            generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=4, decoder=decoder)
    finally:
        handle.remove()


def test_decoder_and_batch_size_come_from_the_config(tokenizer_dir):  # noqa: F811
    config = tiny_config(tokenizer_dir)
    config["evaluation"] = {"batch_size": 8, "batch_sizes": {"tiny": 3}}
    config = tb_config.validate(config)
    assert evaluate.decoder(config) == ("generate" if torch.cuda.is_available() else "batch_invariant")
    assert evaluate.eval_batch_size(config, "tiny") == 3
    other = copy.deepcopy(config.config)
    other["evaluation"].update(decoder="generate", batch_sizes={})
    assert evaluate.decoder(other) == "generate" and evaluate.eval_batch_size(other, "tiny") == 8
    assert models.max_memory(_config(tokenizer_dir, config["models"]["tiny"]["base"], {"0": "70GiB", "cpu": 10})) == {
        0: "70GiB",
        "cpu": 10,
    }
    with pytest.raises(ConfigError, match="evaluation.max_memory"):
        _config(tokenizer_dir, config["models"]["tiny"]["base"], {"gpu0": "70GiB"})


@pytest.mark.parametrize("where", ["top", "entry"])
def test_packing_under_flash_attention_is_refused_in_one_sentence(tokenizer_dir, where):  # noqa: F811
    settings = {"batching": "packing", "attn_implementation": "flash_attention_2"}
    key = "training" if where == "top" else r"experiments\.finetune\[0\]\.training"
    with pytest.raises(ConfigError, match=rf"^{key} packs examples under flash_attention_2, which would attend across"):
        # tiny_config validates what it builds, so the top-level case is refused there.
        config = tiny_config(tokenizer_dir, training=settings if where == "top" else None)
        config["experiments"]["finetune"][0]["training"] = settings
        tb_config.validate(config)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="spreading over GPUs needs CUDA")
def test_on_gpus_the_model_is_spread_over_every_visible_gpu_by_free_memory(
    tokenizer_dir,
    tokenizer,
    prompts,  # noqa: F811
    saved_model,
):
    config = _config(tokenizer_dir, {"local": str(saved_model)})
    budget = models.max_memory(config)
    assert sorted(budget) == list(range(torch.cuda.device_count()))
    model, _ = models.load_for_inference(config, "tiny", role="base")
    assert {str(d) for d in model.hf_device_map.values()} <= {str(i) for i in budget}
    invariant, _ = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=4)
    batched, _ = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=4, decoder="generate")
    assert len(batched) == len(invariant) and all(g.generated_tokens >= 1 for g in batched)


@pytest.mark.parametrize(
    "params_b, dtype, gpus, memory, quantized, fits",
    [
        (69.0, "bfloat16", 2, 80, False, True),  # 138 GB over two A100-80GB, 15 % of each kept for the cache
        (69.0, "bfloat16", 1, 80, False, False),
        (13.0, "bfloat16", 1, 24, False, False),  # 26 GB does not fit one A10G ...
        (13.0, "bfloat16", 2, 24, False, True),  # ... but two
        (69.0, "bfloat16", 1, 80, True, True),  # NF4: ≈38 GB
        (7.0, "float32", 1, 24, False, False),
    ],
)
def test_weights_fit_the_declared_gpus_under_the_loading_budget(params_b, dtype, gpus, memory, quantized, fits):
    assert models.weights_fit(params_b, dtype, gpus, memory, quantized=quantized) is fits


def test_the_generate_path_trades_batch_invariance_for_speed(tokenizer, prompts):
    """At engineered near-ties the batched path answers differently at another batch size; the default does not."""
    from test_generate import tiny_model

    model = tiny_model(tokenizer, near_ties=True)
    texts = {
        (decoder, size): [
            g.text for g in generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=size, decoder=decoder)[0]
        ]
        for decoder in ("batch_invariant", "generate")
        for size in (1, len(prompts))
    }
    assert texts[("batch_invariant", 1)] == texts[("batch_invariant", len(prompts))]
    assert texts[("generate", 1)] != texts[("generate", len(prompts))]
