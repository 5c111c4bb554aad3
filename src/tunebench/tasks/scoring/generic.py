"""The scorers a task declared in the config chooses from (``tasks.NAME.scorer``).

Each scorer has its metric names (the first is the primary one), an ``extract`` that returns the part of
the output it compares, and a ``score``. ``gold["answer"]`` is the target text; ``sql_execution`` also
reads ``gold["context"]``. Model text is untrusted: JSON is parsed as data, numbers by pattern, and SQL
runs only through the SQL test-suite scorer (in-memory SQLite under an authorizer and a time limit).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping
from typing import Any

import regex

from . import canonical, last_number, parse_number

_SPACE = re.compile(r"\s+")
#: Seconds a declared pattern may search one output: a pattern that backtracks without end (``^(a|aa)+$``)
#: must not stall the evaluation, so the row is counted unscorable instead.
PATTERN_TIMEOUT_S = 1.0
PATTERN_TIMED_OUT = f"the pattern ran past its {PATTERN_TIMEOUT_S:g} s time limit"

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower case, punctuation removed, runs of whitespace made one space."""
    return _SPACE.sub(" ", text.lower().translate(_PUNCTUATION)).strip()


def first_json_object(text: str) -> dict | None:
    """The first JSON object written in ``text`` (``None`` if there is none)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:  # not JSON there, or a number beyond the digit limit
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _gold_object(answer: Any) -> dict | None:
    if isinstance(answer, dict):
        return answer
    if isinstance(answer, str):
        try:
            value = json.loads(answer)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return None


class Scorer:
    """One scorer: metric names and the functions that extract and judge."""

    def __init__(self, metrics: tuple[str, ...], extract: Callable[..., Any], score: Callable[..., dict]):
        self.metrics = metrics
        self.extract = extract
        self.score = score


def _exact(options):
    def extract(prediction: str) -> str:
        return prediction.strip()

    def score(prediction, gold, **_):
        return {"exact_match": extract(prediction) == str(gold["answer"]).strip()}

    return Scorer(("exact_match",), extract, score)


def _normalized(options):
    def extract(prediction: str) -> str:
        return normalize(prediction)

    def score(prediction, gold, **_):
        return {"normalized_match": normalize(prediction) == normalize(str(gold["answer"]))}

    return Scorer(("normalized_match",), extract, score)


def _regex(options):
    pattern = regex.compile(options["pattern"])

    def search(prediction: str) -> tuple[str | None, bool]:
        """The compared text (None without a match) and whether the time limit cut the search short."""
        try:
            match = pattern.search(prediction, timeout=PATTERN_TIMEOUT_S)
        except TimeoutError:
            return None, True
        if match is None:
            return None, False
        return (match.group(1) if pattern.groups else match.group(0)).strip(), False

    def extract(prediction: str) -> str | None:
        return search(prediction)[0]

    def score(prediction, gold, **_):
        found, timed_out = search(prediction)
        if timed_out:
            return {"regex_match": None, "unscorable": PATTERN_TIMED_OUT}
        return {"regex_match": found == str(gold["answer"]).strip()}

    return Scorer(("regex_match",), extract, score)


def _number(options):
    def extract(prediction: str) -> str | None:
        value = last_number(prediction)
        return None if value is None else canonical(value)

    def score(prediction, gold, **_):
        target = parse_number(gold["answer"])
        if target is None:
            return {"number_match": None}  # the gold is not a number: nothing to compare with
        value = last_number(prediction)
        return {"number_match": value is not None and value == target}

    return Scorer(("number_match",), extract, score)


JSON_METRICS = ("fields_exact", "key_set", "key_order", "values", "valid_json")


def _json_fields(options):
    def extract(prediction: str) -> str | None:
        found = first_json_object(prediction)
        return None if found is None else json.dumps(found, ensure_ascii=False)

    def score(prediction, gold, **_):
        target = _gold_object(gold["answer"])
        if target is None:
            return dict.fromkeys(JSON_METRICS)
        found = first_json_object(prediction)
        if found is None:
            return dict.fromkeys(JSON_METRICS, False)
        same_set = set(found) == set(target)
        values = all(key in found and found[key] == value for key, value in target.items())
        ordered = list(found) == list(target)
        return {
            "fields_exact": same_set and values and ordered,
            "key_set": same_set,
            "key_order": ordered,
            "values": same_set and values,
            "valid_json": True,
        }

    return Scorer(JSON_METRICS, extract, score)


def _sql_execution(options):
    from . import sql

    return Scorer(sql.METRICS, sql.extract, sql.score)


def _choice(options):
    letters = [letter.lower() for letter in options["choices"]]
    alternatives = "|".join(map(re.escape, letters))
    # A letter counts in parentheses or before ")", ".", ",", ":" or the end, never as a word ("a train
    # 150 m long" names no option): "the answer is (b)", "Answer: B", or an opening "b) 27" or "C.".
    letter = rf"(?:\(({alternatives})\)|({alternatives})(?:\)|\.|,|:|$))"
    stated = re.compile(rf"answer\s*(?:is|:)?\s*:?\s*{letter}", re.IGNORECASE)
    opening = re.compile(rf"^\s*{letter}", re.IGNORECASE)

    def extract(prediction: str) -> str | None:
        found = stated.findall(prediction.strip())
        if found:
            return "".join(found[-1]).lower()
        match = opening.match(prediction.strip())
        return "".join(g for g in match.groups() if g).lower() if match else None

    def score(prediction, gold, **_):
        target = str(gold["answer"]).strip().lower()
        if target not in letters:
            return {"choice_accuracy": None}
        return {"choice_accuracy": extract(prediction) == target}

    return Scorer(("choice_accuracy",), extract, score)


SCORERS: dict[str, Callable[[Mapping[str, Any]], Scorer]] = {
    "exact": _exact,
    "normalized": _normalized,
    "regex": _regex,
    "number": _number,
    "json_fields": _json_fields,
    "sql_execution": _sql_execution,
    "choice": _choice,
}


def build(name: str, options: Mapping[str, Any]) -> Scorer:
    """The scorer ``name`` with a task's options (``pattern``, ``choices``)."""
    return SCORERS[name](options)
