"""GSM8K: the final number, read two ways.

``strict_accuracy`` reads the number after ``####`` (the format the fine-tuned models learn);
``flexible_accuracy`` reads the last number anywhere in the text (fair to prompted models that
answer in prose). Numbers compare as numbers: ``$``, thousands commas and trailing ``.0``/``.00``
do not matter; a digit string longer than :data:`tunebench.tasks.scoring.MAX_DIGITS` is wrong.
These replace the study's GPT-3.5 answer extraction with a deterministic one that agrees with
lm-evaluation-harness's ``strict-match`` and ``flexible-extract`` filters on ordinary outputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from . import NUMBER_PATTERN, canonical, last_number, number_from_match, parse_number

METRICS = ("strict_accuracy", "flexible_accuracy")

_STRICT = re.compile(r"####[ \t]*" + NUMBER_PATTERN)


def extract_strict(prediction: str) -> Decimal | None:
    """The number right after the first ``####`` marker."""
    match = _STRICT.search(prediction)
    return number_from_match(match) if match else None


def extract_flexible(prediction: str) -> Decimal | None:
    """The last number in the text."""
    return last_number(prediction)


def extract(prediction: str) -> str | None:
    """The answer a reader would take: the ``####`` number if there is one, else the last number."""
    number = extract_strict(prediction)
    if number is None:
        number = extract_flexible(prediction)
    return canonical(number) if number is not None else None


def gold_number(gold: Mapping[str, Any]) -> Decimal | None:
    """The gold value: a bare number, or a worked solution ending in ``#### N``."""
    answer = gold.get("answer")
    if isinstance(answer, str) and "####" in answer:
        return extract_strict(answer)
    return parse_number(answer)


def score(prediction: str, gold: Mapping[str, Any], **options: Any) -> dict[str, bool | None]:
    """Strict and flexible verdicts; ``None`` for both when the gold answer holds no number."""
    expected = gold_number(gold)
    if expected is None:
        return dict.fromkeys(METRICS)
    strict = extract_strict(prediction)
    flexible = extract_flexible(prediction)
    return {
        "strict_accuracy": strict is not None and strict == expected,
        "flexible_accuracy": flexible is not None and flexible == expected,
    }
