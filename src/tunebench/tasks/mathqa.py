"""MathQA: multiple-choice math problems with rationales, stage one of the two-stage GSM8K run.

The completion is the rationale, then the chosen option, then ``#### <option value>`` so that the
first stage already teaches the answer convention GSM8K is scored by. MathQA is only trained on,
never scored. The ``options`` field comes in two styles (``a ) 38 , b ) 27.6 , ...`` and a
Python-list string); both are read without evaluating anything.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from . import data, register
from .base import BadRow, Prepared, Task, hub, section

LETTERS = ("a", "b", "c", "d", "e")
_OPTION = re.compile(r"(?:^|,)\s*([a-e])\s*\)\s*(.*?)\s*(?=,\s*[a-e]\s*\)|$)", re.DOTALL)

# What each prepared split is made of, for a mirror with and without the (large) train file.
_WITH_TRAIN = {"train": ["train.json"], "validation": ["dev.json"], "test": ["test.json"]}
_WITHOUT_TRAIN = {"train": ["dev.json", "test.json"], "validation": ["challenge_test.json"], "test": []}
_HUB = {"train": ["train"], "validation": ["validation"], "test": ["test"]}


def parse_options(text: str) -> dict[str, str]:
    """``{letter: value}`` from either options style; a bad row when a letter repeats or none is found."""
    text = text.strip()
    if text.startswith("["):
        try:
            items = ast.literal_eval(text)  # a literal parser: never runs code
        except (ValueError, SyntaxError):
            raise BadRow("options list cannot be read") from None
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise BadRow("options list cannot be read")
        text = " , ".join(items)
    options: dict[str, str] = {}
    for letter, value in _OPTION.findall(text):
        if letter in options:
            raise BadRow("an option letter appears twice")
        options[letter] = value.strip()
    if not options:
        raise BadRow("options cannot be read")
    return options


def clean_rationale(text: str) -> str:
    """The rationale without the literal double quotes that wrap most of them."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def _row(part: str):
    def make(index: int, record: Mapping[str, Any]) -> dict:
        problem = data.text_field(record, "Problem", "problem")
        rationale = data.text_field(record, "Rationale", "rationale")
        options = parse_options(data.text_field(record, "options"))
        correct = data.text_field(record, "correct", "correct option").lower()
        if correct not in options:
            raise BadRow("the correct option is not among the options")
        value = options[correct]
        if not value:
            raise BadRow("the correct option is empty")
        rationale = clean_rationale(rationale)
        if not rationale:
            raise BadRow("empty rationale")
        listed = "\n".join(f"{letter}) {options[letter]}" for letter in LETTERS if letter in options)
        return {
            "id": f"mathqa-{part.removesuffix('.json')}-{index:05d}",
            "prompt": f"{problem}\nOptions:\n{listed}",
            "completion": f"{rationale}\nThe answer is {correct}) {value}.\n#### {value}",
            "answer": value,
            "correct": correct,
            "category": record.get("category") if isinstance(record.get("category"), str) else "",
        }

    return make


class MathQA(Task):
    name = "mathqa"
    order = 3
    schema = section(
        "MathQA multiple-choice problems with rationales (stage one of the two-stage GSM8K run).",
        hub=hub("allenai/math_qa"),
    )
    label = "MathQA"
    instruction = (
        "Solve the multiple-choice math problem. Explain the reasoning, name the correct option and "
        "finish with a line #### <value of that option>."
    )
    scorer = None  # trained on only; the two-stage run is scored on GSM8K
    primary_metric = ""
    baseline_variants = ()
    required_splits = ("train", "validation")  # a first training stage only: the mirror lacks a usable test split
    hub_records = {"train": 29837, "validation": 4475, "test": 2985}  # the published split sizes
    mirror_files = {  # records and sha256 of the published files (the mirror's SOURCES.md)
        "mathqa/train.json": (29837, "00e8919347d65dbba9289bf04ed998a6c48dbf451ca909eeb66a35f2419c2bf6"),
        "mathqa/dev.json": (4475, "aeca12424fc8f32d0e35c09b7738986a446c12f110c8071f3cc8913712f04bf3"),
        "mathqa/test.json": (2985, "dfe7bc4691caf26842ccd4cf14e8f978327bab4f2989e0b076a4e6b38a9371d1"),
        "mathqa/challenge_test.json": (604, "76cfe1091d19c61a95abc8cca23dfde9e1690bdb6a0b42a35453193483253579"),
    }

    def prepare(self, options: Mapping[str, Any], mirror, seed: int) -> Prepared:
        source = data.Source(self.name, mirror, options.get("hub"))
        notes = []
        if mirror is None:
            layout = _HUB
        elif source.has("mathqa/train.json"):
            layout = _WITH_TRAIN
        else:
            layout = _WITHOUT_TRAIN
            notes.append(
                "The mirror lacks mathqa/train.json (29,837 problems), so training uses dev.json and test.json "
                "(7,460 problems), validation uses challenge_test.json and the test split is empty; MathQA is not "
                "scored."
            )
        splits = {}
        for split in data.SPLITS:
            rows = []
            for name in layout[split]:
                part = f"mathqa/{name}" if mirror else name
                records = source.json_array(part) if mirror else source.hub_split(name)
                rows.extend(source.convert(part, records, _row(name)))
            splits[split] = rows
        return source.prepared(splits, notes=notes)


TASK = register(MathQA())
