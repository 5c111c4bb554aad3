"""Tokenisation, loss masks, the three batch layouts, the epoch plan and how an epoch is judged."""

from __future__ import annotations

import pytest
import torch

from train_support import TINY_LLAMA, multiplication_rows, resolved, tiny_config, tokenizer_dir, write_data  # noqa: F401
from tunebench import tasks
from tunebench.stages import formats, models
from tunebench.stages.train import batching
from tunebench.stages.train.loop import epoch_batches, steps_in
from tunebench.util.errors import ConfigError, DataError

TASK = tasks.get("multiplication")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    tok = models.load_tokenizer({"local": str(tokenizer_dir)})
    tok.add_tokens(formats.added_tokens("special_tokens"), special_tokens=True)
    return tok


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    return models.random_llama(TINY_LLAMA, tokenizer).eval()


def test_completion_loss_masks_the_prompt_and_keeps_the_end_marker(tokenizer):
    row = multiplication_rows("train", 1)[0]
    example, truncated = batching.encode(tokenizer, "special_tokens", TASK, row, "completion", 64)
    prompt_text, completion_text = formats.render("special_tokens", TASK, row, tokenizer)
    prompt_ids = formats.encode_prompt(tokenizer, prompt_text)
    assert not truncated
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    # targets are shifted: position t predicts token t + 1, and only completion tokens are targets
    targets = [label for label in example.labels if label != batching.IGNORE]
    assert targets == example.input_ids[len(prompt_ids) :]
    assert tokenizer.decode(targets) == completion_text
    assert targets[-1] == tokenizer.convert_tokens_to_ids(formats.END_A)
    assert example.labels[-1] == batching.IGNORE


@pytest.mark.parametrize("fmt", formats.FORMATS)
def test_every_format_trains_on_its_completion_and_end_marker_only(tokenizer, fmt):
    row = multiplication_rows("train", 1)[0]
    example, _ = batching.encode(tokenizer, fmt, TASK, row, "completion", 256)
    prompt_text, completion_text = formats.render(fmt, TASK, row, tokenizer)
    assert prompt_text == formats.render_prompt(fmt, TASK, row, tokenizer)
    prompt_ids = formats.encode_prompt(tokenizer, prompt_text)
    assert example.input_ids[: len(prompt_ids)] == prompt_ids
    targets = [label for label in example.labels if label != batching.IGNORE]
    assert tokenizer.decode(targets) == completion_text
    assert any(stop in completion_text for stop in formats.stop_strings(fmt, tokenizer))


def test_all_tokens_loss_learns_the_prompt_too(tokenizer):
    row = multiplication_rows("train", 1)[0]
    example, _ = batching.encode(tokenizer, "special_tokens", TASK, row, "all", 64)
    assert example.labels[:-1] == example.input_ids[1:]


def test_truncation_is_counted_and_an_example_without_targets_is_skipped(tokenizer):
    rows = multiplication_rows("train", 3)
    long = dict(rows[0], prompt="many words " * 40)
    examples, stats = batching.encode_rows(
        tokenizer, "special_tokens", TASK, [long] + rows[1:], "completion", 40, "train.jsonl"
    )
    assert stats.truncated == 1
    assert stats.skipped == {"prompt fills max_length": 1}
    assert stats.examples == len(examples) == 2
    assert all(len(e.input_ids) <= 40 for e in examples)


def test_a_row_without_a_completion_is_refused_with_its_line(tokenizer):
    rows = multiplication_rows("train", 2)
    del rows[1]["completion"]
    with pytest.raises(DataError, match=r"train.jsonl row 2 lacks"):
        batching.encode_rows(tokenizer, "special_tokens", TASK, rows, "completion", 64, "train.jsonl")


def test_packing_keeps_examples_whole_and_restarts_positions(tokenizer):
    examples, _ = batching.encode_rows(
        tokenizer, "special_tokens", TASK, multiplication_rows("train", 10), "all", 64, "t"
    )
    rows = batching.pack(examples, 64)
    assert [e for row in rows for e in row] == examples
    assert all(sum(len(e.input_ids) for e in row) <= 64 for row in rows)
    assert len(rows) < len(examples)
    batch = batching.collate(rows, tokenizer.pad_token_id, "packing")
    first = rows[0]
    starts = [0]
    for example in first[:-1]:
        starts.append(starts[-1] + len(example.input_ids))
    assert all(int(batch["position_ids"][0, s]) == 0 for s in starts)
    assert "attention_mask" not in batching.model_inputs(batch, "packing")
    assert "attention_mask" in batching.model_inputs(batch, "pad_to_longest")


def test_pad_to_gives_every_row_the_same_width_and_padding_is_never_a_target(tokenizer):
    examples, _ = batching.encode_rows(
        tokenizer, "special_tokens", TASK, multiplication_rows("train", 3), "all", 64, "t"
    )
    batch = batching.collate([[e] for e in examples], tokenizer.pad_token_id, "pad_to", pad_to=96)
    assert batch["input_ids"].shape == (3, 96)
    padding = batch["attention_mask"] == 0
    assert padding.any()
    assert (batch["labels"][padding] == batching.IGNORE).all()


def test_pad_to_below_max_length_is_a_config_error(tokenizer_dir, tmp_path):
    config = tiny_config(tokenizer_dir, training={"batching": "pad_to", "pad_to": 32, "max_length": 64})
    with pytest.raises(ConfigError, match="training.pad_to is 32"):
        resolved(config, "lora", tmp_path / "out", write_data(tmp_path / "data"))


def _per_token_loss(model, examples, layout, pad_id, pad_to=None):
    batch = batching.collate(batching.layout_rows(examples, layout, 128), pad_id, layout, pad_to)
    with torch.no_grad():
        logits = model(**batching.model_inputs(batch, layout)).logits
    labels = batch["labels"].reshape(-1)
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels, reduction="none")
    return losses[labels != batching.IGNORE]


@pytest.mark.parametrize("loss_on", ["all", "completion"])
def test_packed_and_unpacked_batches_give_the_same_per_token_loss(tokenizer, tiny_model, loss_on):
    rows = multiplication_rows("train", 12)
    examples, _ = batching.encode_rows(tokenizer, "special_tokens", TASK, rows, loss_on, 128, "t")
    unpacked = _per_token_loss(tiny_model, examples, "pad_to_longest", tokenizer.pad_token_id)
    packed = _per_token_loss(tiny_model, examples, "packing", tokenizer.pad_token_id)
    assert len(batching.pack(examples, 128)) < len(examples)  # several examples really share a row
    assert unpacked.shape == packed.shape
    assert torch.allclose(unpacked, packed, atol=1e-5, rtol=0)
    # and packing without restarting positions would not: the check above can fail
    batch = batching.collate(batching.pack(examples, 128), tokenizer.pad_token_id, "packing")
    batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
    with torch.no_grad():
        logits = tiny_model(**batching.model_inputs(batch, "packing")).logits
    leaked = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), reduction="none"
    )
    assert not torch.allclose(leaked[batch["labels"].reshape(-1) != batching.IGNORE], packed, atol=1e-5, rtol=0)


@pytest.mark.parametrize("loss_on", ["all", "completion"])
def test_padding_free_batches_give_the_per_token_losses_of_pad_to_512(tokenizer, tiny_model, loss_on):
    rows = multiplication_rows("train", 12)
    examples, _ = batching.encode_rows(tokenizer, "special_tokens", TASK, rows, loss_on, 128, "t")
    batch = batching.collate(
        batching.layout_rows(examples, "padding_free", 128), tokenizer.pad_token_id, "padding_free"
    )
    # one row holding exactly the batch's tokens: nothing is computed on padding
    assert batch["input_ids"].shape == (1, sum(len(e.input_ids) for e in examples))
    assert batch["attention_mask"].all()
    padded = _per_token_loss(tiny_model, examples, "pad_to", tokenizer.pad_token_id, pad_to=512)
    free = _per_token_loss(tiny_model, examples, "padding_free", tokenizer.pad_token_id)
    assert padded.shape == free.shape == (sum(label != batching.IGNORE for e in examples for label in e.labels),)
    assert torch.allclose(padded, free, atol=1e-5, rtol=0)


def test_epoch_order_is_seeded_and_changes_between_epochs(tokenizer):
    examples, _ = batching.encode_rows(
        tokenizer, "special_tokens", TASK, multiplication_rows("train", 20), "all", 64, "t"
    )
    training = {"seed": 42, "batching": "pad_to_longest", "max_length": 64, "batch_size": 4}
    first = epoch_batches(examples, 1, training)
    assert first == epoch_batches(examples, 1, training)
    assert first != epoch_batches(examples, 2, training)
    assert sorted(id(e) for b in first for row in b for e in row) == sorted(id(e) for e in examples)
    # 5 batches over 2 processes × 2 accumulation steps: 2 optimizer steps, the last one partly empty
    assert steps_in(first, world=2, accum=2) == 2


def test_the_lowest_validation_perplexity_wins_and_patience_stops_early():
    from tunebench.stages.train.loop import judge_epoch

    assert judge_epoch(None, 0, 9.0, patience=2) == (True, 0, False)
    assert judge_epoch(9.0, 0, 8.5, patience=2) == (True, 0, False)
    assert judge_epoch(8.5, 0, 8.5, patience=2) == (False, 1, False)  # a tie is no improvement
    assert judge_epoch(8.5, 1, 8.7, patience=2) == (False, 2, True)
    assert judge_epoch(8.5, 5, 8.7, patience=None) == (False, 6, False)
