"""ViGGO reversed (study A1): from a sentence about a video game to its meaning representation.

The corpus pairs a meaning representation (``mr``, e.g. ``confirm(name[Spyro], has_mac_release[no])``)
with sentences that express it (``ref``). The study reverses the original direction: the sentence
is the input and the meaning representation is both the completion and the scored answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..util.errors import ConfigError
from . import data, register
from .base import BadRow, Prepared, Task, hub, section
from .scoring.viggo import ATTRIBUTES, FUNCTIONS

_MR = re.compile(r"(\w+)\((.*)\)", re.DOTALL)
_ATTRIBUTE = re.compile(r"(\w+)\[[^\[\]]*\]")

# Mirror files and hub splits of each prepared split; the hub's GEM/viggo renames the columns.
_MIRROR = {"train": "viggo/train.csv", "validation": "viggo/valid.csv", "test": "viggo/test.csv"}
_COLUMNS = {"mirror": ("ref", "mr"), "hub": ("target", "meaning_representation")}


def function_of(mr: str) -> str | None:
    match = _MR.fullmatch(mr.strip())
    return match.group(1) if match else None


def attributes_of(mr: str) -> list[str]:
    match = _MR.fullmatch(mr.strip())
    return _ATTRIBUTE.findall(match.group(2)) if match else []


def _row(split: str, sentence_key: str, mr_key: str):
    def make(index: int, record: Mapping[str, Any]) -> dict:
        sentence = data.text_field(record, sentence_key, "sentence")
        mr = data.text_field(record, mr_key, "meaning representation")
        function = function_of(mr)
        if function is None:
            raise BadRow("meaning representation is not function(attributes)")
        if function not in FUNCTIONS:
            raise BadRow("meaning representation has an unknown function")
        return {"id": f"viggo-{split}-{index:05d}", "prompt": sentence, "completion": mr, "answer": mr}

    return make


class Viggo(Task):
    name = "viggo"
    order = 0
    schema = section(
        "ViGGO reversed (sentence to meaning representation).",
        hub=hub("GEM/viggo"),
    )
    scorer = ".viggo"
    label = "ViGGO"
    instruction = (
        "Translate the sentence about a video game into a meaning representation: one function "
        "followed by the attributes it mentions, as function(attribute[value], ...)."
    )
    primary_metric = "attributes_ordered_accuracy"
    max_new_tokens = 128  # the longest meaning representations are about 80 tokens (SmolLM2 tokenizer)
    baseline_variants = ("default",)
    hub_records = {"train": 5103, "validation": 714, "test": 1083}  # GEM/viggo: the same corpus
    mirror_files = {  # records and sha256 of the published files (the mirror's SOURCES.md)
        "viggo/train.csv": (5103, "bff4ce77f71feb6790b4f5b62150027573423ebd8673cc7b2517e0f53c616505"),
        "viggo/valid.csv": (714, "f3b9601448fb886589cb8adf708050f2b2a0654eb8c51ac3e2005eb88768ea14"),
        "viggo/test.csv": (1083, "e052ec0ef0896bb965e305083d04087d177937c13a643f2f2346f906ef3f2be8"),
    }

    def prepare(self, options: Mapping[str, Any], mirror, seed: int) -> Prepared:
        source = data.Source(self.name, mirror, options.get("hub"))
        sentence_key, mr_key = _COLUMNS["mirror" if mirror else "hub"]
        splits = {}
        for split in data.SPLITS:
            part = _MIRROR[split] if mirror else split
            records = source.csv(part) if mirror else source.hub_split(split)
            splits[split] = source.convert(part, records, _row(split, sentence_key, mr_key))
        return source.prepared(
            splits, notes=["Reversed direction: prompt = sentence, completion = answer = meaning representation."]
        )

    def examples(self, train: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """One training row per function, in the order of FUNCTIONS: the one whose id hashes lowest."""
        cached = getattr(self, "_examples", None)
        if cached is None or cached[0] is not train:
            # Evaluation asks once per test row with the same list; choose once.
            best: dict[str, tuple[int, Mapping[str, Any]]] = {}
            for row in train:
                function = function_of(row["answer"])
                rank = data.stable_int("viggo-example", row["id"])
                if function in FUNCTIONS and (function not in best or rank < best[function][0]):
                    best[function] = (rank, row)
            self._examples = cached = (train, [best[f][1] for f in FUNCTIONS if f in best])
        return cached[1]

    def baseline_messages(self, row, train, variant, options):
        if variant != "default":
            raise ConfigError(f"the viggo baseline has no prompt variant {variant!r}; use default.")
        system = (
            "You convert sentences from a conversation about video games into meaning representations. "
            "A meaning representation is a single function name followed by a parenthesised, comma-separated "
            "list of attributes, each written as attribute[value].\n"
            f"The function must be one of: {', '.join(FUNCTIONS)}.\n"
            f"The attributes must come from this list: {', '.join(ATTRIBUTES)}.\n"
            "Include only the attributes the sentence mentions, and write them in the order of that list: "
            "an attribute never appears after one that comes later in the list. "
            "Reply with the meaning representation only, on one line."
        )
        shots = "\n\n".join(
            f"Sentence: {ex['prompt']}\nMeaning representation: {ex['answer']}" for ex in self.examples(train)
        )
        user = (
            f"Examples:\n\n{shots}\n\nNow the sentence to convert.\nSentence: {row['prompt']}\nMeaning representation:"
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


TASK = register(Viggo())
