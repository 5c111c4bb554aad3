"""Long multiplication (study B): generated questions with worked long-multiplication answers.

Every completion writes both operands as digits times place values, gives one line per digit pair
(digit × digit, shifted left by the two place values), adds all partial products and ends with the
product. The generator re-derives every number it writes and refuses to emit a row that disagrees
with ``a * b``. Pairs are drawn without repetition, treating ``a * b`` and ``b * a`` as the same
problem, so no problem is in two splits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..util.errors import ConfigError
from . import data, register
from .base import Prepared, Task, fraction, section


def question(a: int, b: int) -> str:
    return f"What is {a} * {b}?"


def _digits(n: int) -> list[tuple[int, int]]:
    """(digit, power of ten) pairs from the ones place upwards."""
    return [(int(ch), power) for power, ch in enumerate(reversed(str(n)))]


def solution(a: int, b: int) -> tuple[str, int]:
    """The worked answer and the product, after checking every partial product and the total.

    The wording is terse on purpose: a 4 x 4-digit answer has 16 partial-product lines and must fit,
    with its prompt, in the study's 512-token context (tokenisers split numbers into single digits,
    so the answer alone is about 430 tokens for SmolLM2 and Llama-2).
    """
    digits_a, digits_b = _digits(a), _digits(b)
    lines = [
        f"{n} = {'+'.join(str(d * 10**p) for d, p in reversed(digits))}" for n, digits in ((a, digits_a), (b, digits_b))
    ]
    partials = []
    for da, pa in digits_a:
        for db, pb in digits_b:
            value = da * db * 10 ** (pa + pb)
            partials.append(value)
            lines.append(f"{da}*{db}={da * db}, shift {pa + pb}: {value}")
    total = sum(partials)
    product = a * b
    rebuilt_a = sum(d * 10**p for d, p in digits_a)
    rebuilt_b = sum(d * 10**p for d, p in digits_b)
    if total != product or rebuilt_a != a or rebuilt_b != b:
        raise AssertionError(f"long multiplication of {a} * {b} gave {total}, not {product}")
    lines.append(f"Sum: {'+'.join(map(str, partials))} = {total}")
    lines.append(f"{a} * {b} = {product}")
    return "\n".join(lines), product


def make_row(a: int, b: int) -> dict:
    completion, product = solution(a, b)
    return {
        "id": f"multiplication-{a}x{b}",
        "prompt": question(a, b),
        "completion": completion,
        "answer": str(product),
        "a": a,
        "b": b,
    }


def generate(
    rows: int, digits: tuple[int, int], seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, list[dict]]:
    """``rows`` distinct problems split into train/validation/test; same arguments, same rows."""
    da, db = digits
    lo_a, hi_a = 10 ** (da - 1), 10**da - 1
    lo_b, hi_b = 10 ** (db - 1), 10**db - 1
    span_a, span_b = hi_a - lo_a + 1, hi_b - lo_b + 1
    overlap = max(0, min(hi_a, hi_b) - max(lo_a, lo_b) + 1)  # numbers that can appear on either side
    distinct = span_a * span_b - overlap * (overlap - 1) // 2
    if rows > distinct:
        raise ConfigError(
            f"tasks.multiplication.rows is {rows} but only {distinct} distinct {da}- by {db}-digit problems exist; "
            "lower rows or raise digits."
        )
    n_test = round(rows * test_fraction)
    n_validation = round(rows * validation_fraction)
    if n_test + n_validation >= rows:
        raise ConfigError(
            "tasks.multiplication.validation_fraction plus test_fraction leave no training rows; lower them."
        )
    random = data.rng(seed, "multiplication", da, db)
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int]] = []
    while len(pairs) < rows:
        a, b = random.randint(lo_a, hi_a), random.randint(lo_b, hi_b)
        key = (a, b) if a <= b else (b, a)
        if key not in seen:
            seen.add(key)
            pairs.append((a, b))
    made = [make_row(a, b) for a, b in pairs]
    return {
        "test": made[:n_test],
        "validation": made[n_test : n_test + n_validation],
        "train": made[n_test + n_validation :],
    }


class Multiplication(Task):
    name = "multiplication"
    order = 4
    schema = section(
        "Generated long-multiplication problems with worked solutions.",
        rows={"type": "integer", "minimum": 10, "default": 40000, "description": "Rows generated across all splits."},
        digits={
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 12},
            "minItems": 2,
            "maxItems": 2,
            "default": [4, 4],
            "description": "Digits of the first and second operand.",
        },
        validation_fraction=fraction(0.05, "Share of rows for validation."),
        test_fraction=fraction(0.05, "Share of rows for testing."),
    )
    scorer = ".multiplication"
    label = "Multiplication"
    instruction = (
        "Multiply the two numbers by long multiplication: split both into place values, multiply every "
        "pair of digits, shift each product by its places, add the partial products and state the product."
    )
    primary_metric = "accuracy"
    max_new_tokens = 512  # a worked 4 x 4-digit answer is about 430 tokens
    baseline_variants = ("default", "stepwise")

    def prepare(self, options: Mapping[str, Any], mirror, seed: int) -> Prepared:
        rows, digits = options["rows"], tuple(options["digits"])
        splits = generate(rows, digits, seed, options["validation_fraction"], options["test_fraction"])
        source = {
            "kind": "generator",
            "generator": f"{__name__}.generate",
            "rows": rows,
            "digits": list(digits),
            "seed": seed,
        }
        notes = ["Generated, not downloaded: a * b and b * a count as one problem and appear at most once overall."]
        return Prepared(splits={s: splits[s] for s in data.SPLITS}, source=source, notes=notes)

    def baseline_messages(self, row, train, variant, options):
        if variant == "default":
            return [{"role": "user", "content": row["prompt"]}]
        if variant == "stepwise":
            content = (
                f"{row['prompt']}\nWork it out step by step, showing each intermediate result, "
                "and finish with a last line of the form: Answer: <the product>."
            )
            return [{"role": "user", "content": content}]
        raise ConfigError(f"the multiplication baseline has no prompt variant {variant!r}; use default or stepwise.")


TASK = register(Multiplication())
