"""Deterministic scorers, one module per scored task.

Each module defines ``METRICS`` (metric names in display order), ``extract(prediction)`` (the part of
a raw model output that is compared, or ``None``) and ``score(prediction, gold, **options)``, which
returns a verdict per metric: ``True``/``False``, or ``None`` when the row cannot be scored at all
(counted and reported as unscorable, never dropped silently). ``gold`` is a prepared data row or a
``tunebench score`` input line: ``answer`` is the gold answer, ``context`` the CREATE TABLE text for SQL.

Model text is untrusted data: nothing here evaluates it, and SQL runs only inside an in-memory
SQLite database under an authorizer and a time limit (:mod:`tunebench.tasks.scoring.sqlsuite`).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

#: Longest digit string still read as a number; longer ones are absurd and score as wrong.
MAX_DIGITS = 40

# A number as people and models write it: optional minus and dollar sign, ASCII digits with correct
# thousands commas (or none), optional decimals. "12,34" is read as two numbers, not 1234.
NUMBER_PATTERN = r"(?<![0-9])(-?)\$?([0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(\.[0-9]+)?"
_NUMBER = re.compile(NUMBER_PATTERN)


def number_from_match(match: re.Match) -> Decimal | None:
    """The value of a :data:`NUMBER_PATTERN` match, or ``None`` when its digits are absurdly many."""
    sign, whole, fraction = match.group(1), match.group(2).replace(",", ""), match.group(3) or ""
    if len(whole) + len(fraction) > MAX_DIGITS:
        return None
    return Decimal(sign + whole + fraction)


def last_number(text: str) -> Decimal | None:
    """The last number written in ``text`` (``None`` if there is none or it is absurd)."""
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007  (the loop leaves the last match behind)
        pass
    return number_from_match(last) if last else None


def parse_number(value: Any) -> Decimal | None:
    """A gold answer as a number: an int, or a string holding exactly one number ("1,450,000", "$5.00")."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value) if len(str(abs(value))) <= MAX_DIGITS else None
    if isinstance(value, float):
        if not math.isfinite(value):  # Infinity, NaN, or 1e400 (which JSON reads as infinity): no number
            return None
        try:
            return Decimal(repr(value))
        except InvalidOperation:
            return None
    if not isinstance(value, str):
        return None
    match = _NUMBER.fullmatch(value.strip())
    return number_from_match(match) if match else None


def canonical(number: Decimal) -> str:
    """A number written without exponent, trailing zeros or a trailing point ("5.00" -> "5")."""
    text = format(number.normalize(), "f")
    return "0" if text in ("-0", "0") else text
