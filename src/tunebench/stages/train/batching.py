"""From prepared rows to training batches: tokenisation, loss masks, padding and packing.

Every example is stored with its targets already shifted: ``labels[t]`` is the token the model must
predict after reading ``input_ids[:t + 1]``, or ``IGNORE``. Shifting per example (instead of letting
the model shift a whole row) is what keeps packed examples apart in the loss: the last token of one
example is never asked to predict the first token of the next.

Four batch layouts:

``pad_to_longest``  one example per row, rows padded to the longest in the batch
``pad_to``          one example per row, every row padded to ``pad_to`` tokens (study A's layout)
``packing``         rows filled with whole examples up to ``max_length``; position ids restart at 0
                    for every example, and transformers derives a block-diagonal causal mask from
                    them, so attention never crosses an example boundary
``padding_free``    the batch's examples (the same ones as ``pad_to`` takes) concatenated into one row
                    with restarting positions, as under packing: no padding at all, and with one row
                    ``flash_attention_2`` reads the boundaries from the positions (variable-length
                    kernels) while ``sdpa`` gets the block-diagonal mask

Padding is never a target in any layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ...util.errors import DataError
from .. import formats

IGNORE = -100
# Layouts that put several examples in one row, kept apart by restarting position ids alone.
CONCATENATED = ("packing", "padding_free")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # shifted targets; IGNORE where nothing is learned


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0  # longer than max_length, cut at the end
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (not trained on)
    tokens: int = 0
    loss_tokens: int = 0


def encode(
    tokenizer, fmt: str, task: Any, row: Mapping[str, Any], loss_on: str, max_length: int
) -> tuple[Example, bool]:
    """``(example, truncated)`` for one prepared row."""
    prompt_text, completion_text = formats.render(fmt, task, row, tokenizer)
    # Prompt and completion are tokenised apart so that the prompt ids are exactly what generation
    # is given; every format ends its prompt at a marker or newline, where BPE merges do not cross.
    prompt_ids = formats.encode_prompt(tokenizer, prompt_text)
    completion_ids = tokenizer(completion_text, add_special_tokens=False)["input_ids"]
    ids = prompt_ids + completion_ids
    learn = [loss_on == "all"] * len(prompt_ids) + [True] * len(completion_ids)
    truncated = len(ids) > max_length
    ids, learn = ids[:max_length], learn[:max_length]
    labels = [ids[t + 1] if learn[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]
    return Example(ids, labels), truncated


def encode_rows(
    tokenizer, fmt: str, task: Any, rows: Iterable[Mapping[str, Any]], loss_on: str, max_length: int, source: str
) -> tuple[list[Example], EncodeStats]:
    """Encode a split; examples left with nothing to learn are skipped and counted."""
    examples, stats = [], EncodeStats()
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
            raise DataError(
                f"{source} row {number} lacks a text `prompt` or `completion`; re-run `tunebench data` for this task."
            )
        example, truncated = encode(tokenizer, fmt, task, row, loss_on, max_length)
        stats.truncated += truncated
        if all(label == IGNORE for label in example.labels):
            reason = "prompt fills max_length" if truncated else "no target tokens"
            stats.skipped[reason] = stats.skipped.get(reason, 0) + 1
            continue
        examples.append(example)
        stats.examples += 1
        stats.tokens += len(example.input_ids)
        stats.loss_tokens += sum(label != IGNORE for label in example.labels)
    if not examples:
        raise DataError(
            f"{source} has no example with target tokens after encoding; check training.max_length and the data."
        )
    return examples, stats


def pack(examples: Sequence[Example], capacity: int) -> list[list[Example]]:
    """Greedy packing in the given order: a row takes examples until the next one does not fit."""
    rows: list[list[Example]] = []
    current: list[Example] = []
    used = 0
    for example in examples:
        size = len(example.input_ids)
        if current and used + size > capacity:
            rows.append(current)
            current, used = [], 0
        current.append(example)
        used += size
    if current:
        rows.append(current)
    return rows


def collate(
    rows: Sequence[Sequence[Example]], pad_id: int, layout: str, pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Tensors of one batch; ``rows`` holds the examples of each row (one unless packing).

    ``attention_mask`` marks real tokens in every layout; under packing and padding_free it is only for
    counting and is not given to the model (a 2-D mask would turn off the per-example masks of
    ``position_ids``).
    """
    if layout == "padding_free":
        rows = [[example for row in rows for example in row]]
    lengths = [sum(len(e.input_ids) for e in row) for row in rows]
    width = pad_to if layout == "pad_to" else max(lengths)
    if layout == "pad_to" and max(lengths) > width:
        raise ValueError(f"an example of {max(lengths)} tokens does not fit pad_to={width}")
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for example in row:
            n = len(example.input_ids)
            input_ids[r, start : start + n] = torch.tensor(example.input_ids)
            labels[r, start : start + n] = torch.tensor(example.labels)
            position_ids[r, start : start + n] = torch.arange(n)
            start += n
        attention_mask[r, :start] = 1
        # Padding gets its own restarting positions, so under packing it forms a block of its own.
        position_ids[r, start:] = torch.arange(width - start)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": attention_mask}


def model_inputs(batch: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """The keyword arguments of the model's forward for a collated batch.

    No key-value cache: transformers reads packed sequences from ``position_ids`` only without one.
    """
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    if layout not in CONCATENATED:
        inputs["attention_mask"] = batch["attention_mask"]
    return inputs


def layout_rows(examples: Sequence[Example], layout: str, max_length: int) -> list[list[Example]]:
    return pack(examples, max_length) if layout == "packing" else [[e] for e in examples]


def loss_sums(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed token NLL, number of target tokens); labels are already shifted."""
    flat = labels.reshape(-1)
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), flat, ignore_index=IGNORE, reduction="sum"
    )
    return nll, (flat != IGNORE).sum()
