"""Long multiplication: the last integer written is the answer.

The worked solutions end with the product, so the last number in the text is what the model
committed to; thousands commas are allowed ("452,046"). A last number with a non-zero fraction is
not an integer and scores as wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import canonical, last_number, parse_number

METRICS = ("accuracy",)


def extract(prediction: str) -> str | None:
    """The last number in the text if it is an integer."""
    number = last_number(prediction)
    if number is None or number != number.to_integral_value():
        return None
    return canonical(number)


def gold_product(gold: Mapping[str, Any]) -> int | None:
    """The gold product: ``answer``, or ``a * b`` when a prepared row carries only the factors."""
    if gold.get("answer") is not None:
        number = parse_number(gold["answer"])
        return int(number) if number is not None and number == number.to_integral_value() else None
    a, b = gold.get("a"), gold.get("b")
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and not isinstance(b, bool):
        return a * b
    return None


def score(prediction: str, gold: Mapping[str, Any], **options: Any) -> dict[str, bool | None]:
    """``accuracy``: the last integer equals the product; ``None`` when the gold has no integer."""
    expected = gold_product(gold)
    if expected is None:
        return {"accuracy": None}
    found = extract(prediction)
    return {"accuracy": found is not None and int(found) == expected}
