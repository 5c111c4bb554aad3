"""The CPU facts a result depends on, and bitsandbytes' two CPU 4-bit kernel paths.

bitsandbytes repacks 4-bit weights for an AVX512-BF16 kernel on CPUs that have the instruction and
dequantises on the others. Both paths are run here on the demo model's real layer shapes (SmolLM2-135M:
hidden 576, MLP 1536, 9 query and 3 key/value heads), each forced where the CPU allows it; the path
that ran is recorded as a test property and printed in the session header (conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch

from train_support import resolved, tiny_config, tokenizer_dir, write_data  # noqa: F401
from tunebench.stages import models
from tunebench.stages.train import wrap
from tunebench.util import hardware
from tunebench.util.errors import ConfigError

# SmolLM2-135M-Instruct's layer shapes, one decoder layer deep.
SMOLLM2_LAYER = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 1,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 256,
    "seed": 0,
}
QLORA = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}


def _kernel_paths() -> list:
    no_instruction = pytest.mark.skipif(not hardware.bnb_has_avx512_bf16(), reason="this CPU has no AVX512_BF16")
    return ["portable", pytest.param("avx512_bf16", marks=no_instruction)]


def test_cpu_flags_are_the_kernels_view(monkeypatch):
    monkeypatch.delenv(hardware.BNB_CPU_KERNEL_ENV, raising=False)  # the suite may run with a forced path
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    facts = hardware.describe()
    assert facts["cpu_flags"]["avx512_bf16"] == (" avx512_bf16" in flags)
    assert facts["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert facts["bnb_cpu_4bit_kernel"] == ("avx512_bf16" if hardware.bnb_has_avx512_bf16() else "portable")
    monkeypatch.setenv(hardware.BNB_CPU_KERNEL_ENV, "portable")
    assert hardware.describe()["bnb_cpu_4bit_kernel"] == "portable"


def test_an_unknown_kernel_choice_is_one_sentence(monkeypatch):
    monkeypatch.setenv(hardware.BNB_CPU_KERNEL_ENV, "fastest")
    with pytest.raises(ConfigError, match=r"TUNEBENCH_BNB_CPU_KERNEL is 'fastest' but must be one of auto, portable\."):
        hardware.bnb_cpu_kernel()


@pytest.mark.parametrize("path", _kernel_paths())
def test_4bit_inference_on_the_demo_models_layer_shapes(path, tokenizer_dir, monkeypatch, record_property):  # noqa: F811
    monkeypatch.setenv(hardware.BNB_CPU_KERNEL_ENV, "auto" if path == "avx512_bf16" else "portable")
    source = {"random_llama": dict(SMOLLM2_LAYER), "tokenizer": {"local": str(tokenizer_dir)}}
    model = models.load_model(source, quantization=models.bnb_config(QLORA), device="cpu").eval()
    reference = models.load_model(source).eval()
    ids = torch.tensor([[1, 260, 3750, 314, 1167, 2313, 30]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        exact = reference(input_ids=ids).logits
    layers = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert layers == 7  # q, k, v, o, gate, up, down
    assert hardware.packed_4bit_layers(model) == (layers if path == "avx512_bf16" else 0)
    assert hardware.describe_run(model)["bnb_4bit_kernel_used"] == path
    record_property("bnb_4bit_kernel_used", path)
    # NF4 is lossy on either path, but the logits must stay the unquantised model's, not noise.
    assert torch.isfinite(logits).all()
    cosine = torch.nn.functional.cosine_similarity(logits.flatten(), exact.flatten(), dim=0)
    assert cosine > 0.9


def test_training_holds_4bit_layers_to_the_path_that_passes_gradients(tokenizer_dir, tmp_path):  # noqa: F811
    """A validation pass (eval mode, no grad) must not switch training onto the packed inference kernel."""
    config = tiny_config(tokenizer_dir, methods=["qlora"])
    built = wrap.build(resolved(config, "qlora", tmp_path / "out", write_data(tmp_path / "data")), torch.device("cpu"))
    model = built.model
    ids = torch.tensor([[1, 260, 3750, 314, 1167]])
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    assert hardware.packed_4bit_layers(model) == 0
    model.train()
    seen = {}
    down = model.get_submodule("base_model.model.model.layers.1.mlp.down_proj")

    def keep_input(module, args):
        args[0].retain_grad()
        seen["input"] = args[0]

    down.register_forward_pre_hook(keep_input)
    model(input_ids=ids, labels=ids).loss.backward()
    assert seen["input"].grad is not None and seen["input"].grad.abs().sum() > 0
    assert hardware.describe_run(model)["bnb_4bit_kernel_used"] == "portable"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's rule; a GPU decodes in its training dtype")
@pytest.mark.parametrize(
    "flags", [{"avx2", "avx512f", "avx512_bf16"}, {"avx2", "amx_bf16"}, {"avx2", "avx512f"}, set()]
)
def test_decoding_holds_weights_in_bfloat16_exactly_where_the_cpu_computes_in_it(flags, monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    has_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert models.inference_dtype({"training": {"dtype": "auto"}}) == (torch.bfloat16 if has_bf16 else torch.float32)
    assert models.inference_dtype({"training": {"dtype": "float32"}}) == torch.float32  # always a choice


def test_compile_auto_is_on_only_in_one_cpu_process_with_float_weights_and_a_compiler(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpp_compiler", lambda: "/usr/bin/g++")
    assert hardware.training_compile("auto", quantized=False, deepspeed=False)[0] is True
    assert hardware.training_compile("auto", quantized=True, deepspeed=False) == (False, "4-bit layers")
    assert hardware.training_compile("auto", quantized=False, deepspeed=True) == (False, "not under DeepSpeed")
    assert hardware.training_compile(False, quantized=False, deepspeed=False)[0] is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.training_compile("auto", quantized=False, deepspeed=False)[0] is False


def test_compile_without_a_cpp_compiler_falls_back_under_auto_and_is_one_sentence_when_asked_for(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert hardware.cpp_compiler() is None
    compiled, why = hardware.training_compile("auto", quantized=False, deepspeed=False)
    assert not compiled and "no C++ compiler" in why
    with pytest.raises(ConfigError, match=r"^training\.compile is true but no C\+\+ compiler .*\.$"):
        hardware.training_compile(True, quantized=False, deepspeed=False)
