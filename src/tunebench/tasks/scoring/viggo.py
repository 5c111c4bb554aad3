"""ViGGO reversed: the meaning representation ``function(attr[value], ...)`` a model writes.

The first complete representation in the text is parsed; text around it (chatter, a second
attempt) is ignored. Values may contain ``:``, ``(``, ``)`` and ``,`` (``esrb[M (for Mature)]``,
``genres[action, shooter]``) because a value runs to its closing ``]``. The published metrics check
the function and the attribute names (as a set, then as a sequence); ``exact_match`` also checks
the values, whitespace-normalised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

METRICS = ("function_accuracy", "attributes_accuracy", "attributes_ordered_accuracy", "exact_match")

FUNCTIONS = (
    "inform",
    "request",
    "give_opinion",
    "confirm",
    "verify_attribute",
    "suggest",
    "request_explanation",
    "recommend",
    "request_attribute",
)
#: The canonical attribute order every gold representation follows.
ATTRIBUTES = (
    "name",
    "exp_release_date",
    "release_year",
    "developer",
    "esrb",
    "rating",
    "genres",
    "player_perspective",
    "has_multiplayer",
    "platforms",
    "available_on_steam",
    "has_linux_release",
    "has_mac_release",
    "specifier",
)

#: Longest attribute value read; the longest in ViGGO has 57 characters.
MAX_VALUE_CHARS = 200

_START = re.compile(r"(?<![A-Za-z0-9_])([A-Za-z_][A-Za-z0-9_]{0,63})\(")
_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]{0,63})\[")
_SPACE = re.compile(r"\s*")


class MeaningRepresentation(NamedTuple):
    function: str
    attributes: tuple[tuple[str, str], ...]  # (name, whitespace-normalised value), in written order

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.attributes)

    def __str__(self) -> str:
        return f"{self.function}({', '.join(f'{name}[{value}]' for name, value in self.attributes)})"


def _normalise(value: str) -> str:
    return " ".join(value.split())


def parse(text: str) -> MeaningRepresentation | None:
    """The first complete ``function(attr[value], ...)`` with at least one attribute, or ``None``.

    Every attempt reads at most :data:`MAX_VALUE_CHARS` per value, so hostile text (``"a(b[" * 10**6``)
    costs time linear in its length.
    """
    last_close = text.rfind(")")
    for start in _START.finditer(text):
        if start.end() > last_close:
            break
        pos = start.end()
        attributes = []
        while True:
            name = _NAME.match(text, pos)
            if name is None:
                break
            close = text.find("]", name.end(), name.end() + MAX_VALUE_CHARS + 1)
            if close < 0:
                break
            attributes.append((name.group(1), _normalise(text[name.end() : close])))
            pos = _SPACE.match(text, close + 1).end()
            if text.startswith(",", pos):
                pos += 1
                continue
            if text.startswith(")", pos):
                return MeaningRepresentation(start.group(1), tuple(attributes))
            break
    return None


def extract(prediction: str) -> str | None:
    """The parsed representation, rewritten with normalised spacing."""
    parsed = parse(prediction)
    return str(parsed) if parsed else None


def score(prediction: str, gold: Mapping[str, Any], **options: Any) -> dict[str, bool | None]:
    """Verdicts of the four metrics; all ``None`` when the gold itself does not parse."""
    expected = parse(gold.get("answer") or "") if isinstance(gold.get("answer"), str) else None
    if expected is None:
        return dict.fromkeys(METRICS)
    found = parse(prediction)
    if found is None:
        return dict.fromkeys(METRICS, False)
    function_ok = found.function == expected.function
    return {
        "function_accuracy": function_ok,
        "attributes_accuracy": function_ok and set(found.names) == set(expected.names),
        "attributes_ordered_accuracy": function_ok and found.names == expected.names,
        "exact_match": function_ok and found.attributes == expected.attributes,
    }
