"""GSM8K (study A3): grade-school word problems with worked solutions ending in ``#### <number>``.

The published data has train and test only, so the validation split (for checkpoint selection) is a
seeded sample of ``validation_rows`` training problems. The solutions contain calculator notes such
as ``<<48/2=24>>``; ``strip_calculator_notes`` removes them from the completions.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from typing import Any

from ..util.errors import ConfigError
from . import data, register
from .base import BadRow, Prepared, Task, hub, section

_FINAL = re.compile(r"\n?####\s*(.+?)\s*\Z", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")

_MIRROR = {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}


def final_answer(solution: str) -> str:
    """The number after ``####`` with thousands separators removed; a bad row when there is none."""
    match = _FINAL.search(solution)
    if not match:
        raise BadRow("solution does not end with #### <number>")
    number = match.group(1).replace(",", "").replace("$", "").strip()
    if not _NUMBER.fullmatch(number):
        raise BadRow("the text after #### is not a number")
    return number


def _row(part: str, strip_notes: bool):
    def make(index: int, record: Mapping[str, Any]) -> dict:
        question = data.text_field(record, "question")
        solution = data.text_field(record, "answer", "solution")
        answer = final_answer(solution)
        if strip_notes:
            solution = CALCULATOR_NOTE.sub("", solution)
        return {"id": f"gsm8k-{part}-{index:05d}", "prompt": question, "completion": solution, "answer": answer}

    return make


class Gsm8k(Task):
    name = "gsm8k"
    order = 2
    schema = section(
        "Grade-school math word problems.",
        hub=hub("openai/gsm8k", config="main"),
        strip_calculator_notes={
            "type": "boolean",
            "default": False,
            "description": "Remove the <<a*b=c>> calculator notes from solutions.",
        },
        validation_rows={
            "type": "integer",
            "minimum": 1,
            "default": 500,
            "description": "Rows carved from train for validation.",
        },
        few_shot={
            "type": "integer",
            "minimum": 0,
            "default": 8,
            "description": "Worked solutions from the training split in the baseline prompt.",
        },
    )
    scorer = ".gsm8k"
    label = "GSM8K"
    instruction = (
        "Solve the math word problem. Reason step by step, then give the final answer as a number "
        "on the last line, written as #### <number>."
    )
    primary_metric = "strict_accuracy"
    max_new_tokens = 384  # 99 % of reference solutions are under 300 tokens, the longest about 450
    baseline_variants = ("default",)
    hub_records = {"train": 7473, "test": 1319}
    mirror_files = {  # records and sha256 of the published files (the mirror's SOURCES.md)
        "gsm8k/train.jsonl": (7473, "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
        "gsm8k/test.jsonl": (1319, "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
    }

    def prepare(self, options: Mapping[str, Any], mirror, seed: int) -> Prepared:
        source = data.Source(self.name, mirror, options.get("hub"))
        strip_notes = options["strip_calculator_notes"]
        converted = {}
        for part in ("train", "test"):
            label = _MIRROR[part] if mirror else part
            records = source.jsonl(label) if mirror else source.hub_split(part)
            converted[part] = source.convert(label, records, _row(part, strip_notes))
        n_validation = options["validation_rows"]
        train = converted["train"]
        if n_validation >= len(train):
            raise ConfigError(
                f"tasks.gsm8k.validation_rows is {n_validation} but the training split has only {len(train)} rows; "
                "lower it."
            )
        held_out = set(data.rng(seed, self.name, "validation").sample(range(len(train)), n_validation))
        splits = {
            "train": [row for i, row in enumerate(train) if i not in held_out],
            "validation": [row for i, row in enumerate(train) if i in held_out],
            "test": converted["test"],
        }
        notes = [
            f"Validation is a seeded sample of {n_validation} problems of the published train split; their ids keep "
            "the train prefix.",
            "Calculator notes <<...>> were " + ("removed from" if strip_notes else "kept in") + " the completions.",
        ]
        return source.prepared(splits, notes=notes)

    def examples(self, train: list[Mapping[str, Any]], count: int) -> list[Mapping[str, Any]]:
        """``count`` training problems chosen by a hash of their ids (independent of row order)."""
        cached = getattr(self, "_examples", None)
        if cached is None or cached[0] is not train or cached[1] != count:
            # Evaluation asks once per test row with the same list; rank it once.
            chosen = heapq.nsmallest(count, train, key=lambda row: data.stable_int("gsm8k-example", row["id"]))
            self._examples = cached = (train, count, chosen)
        return cached[2]

    def baseline_messages(self, row, train, variant, options):
        if variant != "default":
            raise ConfigError(f"the gsm8k baseline has no prompt variant {variant!r}; use default.")
        system = (
            "You solve grade-school math word problems. Work through the problem step by step and end "
            "with a final line of the form #### <number>, where <number> is the answer without units."
        )
        shots = [
            f"Problem: {ex['prompt']}\nSolution: {CALCULATOR_NOTE.sub('', ex['completion'])}"
            for ex in self.examples(train, options["few_shot"])
        ]
        parts = (["Here are solved examples.", *shots] if shots else []) + [f"Problem: {row['prompt']}\nSolution:"]
        return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


TASK = register(Gsm8k())
