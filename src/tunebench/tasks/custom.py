"""A task declared in the config from your own data (``tasks.NAME`` with ``kind: custom``).

The definition names a source (a JSON Lines, CSV or JSON-array file, or a hub dataset), the input (a field,
or a template naming fields in braces), the target field, the splits (given, or carved from train by a hash
of each row's content), a scorer from :mod:`tunebench.tasks.scoring.generic`, an instruction and the number of
worked examples in the baseline prompt. Rows go through the same data plumbing as the built-in tasks: bad
rows are counted by reason in the manifest, with the source files' sha256.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import regex

from ..util.errors import ConfigError, DataError
from . import data
from .base import BadRow, Prepared, Task

FILE_KINDS = ("jsonl", "csv", "json")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_ .-]*)\}")
DEFAULT_INSTRUCTION = "Read the input and write the output."


def is_custom(section: Any) -> bool:
    return isinstance(section, Mapping) and section.get("kind") == "custom"


def source_kind(source: Mapping[str, Any]) -> str:
    return next(kind for kind in (*FILE_KINDS, "hub") if source.get(kind))


def check(config: Mapping[str, Any], builtin: tuple[str, ...]) -> None:
    """Definitions a schema cannot judge, and experiments naming tasks that exist; one sentence naming the key."""
    declared = []
    for name, section in (config.get("tasks") or {}).items():
        if name in builtin:
            continue
        key = f"tasks.{name}"
        declared.append(name)
        source = section["source"]
        kinds = [kind for kind in (*FILE_KINDS, "hub") if source.get(kind)]
        if len(kinds) != 1:
            raise ConfigError(
                f"{key}.source must name exactly one of jsonl, csv, json or hub (found {', '.join(kinds) or 'none'})."
            )
        if kinds[0] != "hub" and (source.get("config") or source.get("revision")):
            raise ConfigError(f"{key}.source gives config or revision, which only a hub source takes; remove them.")
        scorer = section["scorer"]
        if scorer == "regex":
            if not section.get("pattern"):
                raise ConfigError(
                    f"{key}.pattern is missing; the regex scorer needs the pattern whose match is compared."
                )
            try:
                regex.compile(section["pattern"])
            except regex.error as exc:
                raise ConfigError(f"{key}.pattern is not a valid regular expression ({exc}).") from None
        if scorer == "sql_execution" and not section.get("context"):
            raise ConfigError(
                f"{key}.context is missing; the sql_execution scorer needs the field with the CREATE TABLE statements."
            )
        if scorer == "choice" and len({c.lower() for c in section["choices"]}) != len(section["choices"]):
            raise ConfigError(f"{key}.choices repeats a letter; list each option letter once.")
        splits = section["splits"]
        carved = [s for s in ("validation", "test") if not splits.get(s)]
        total = sum(splits[f"{s}_fraction"] for s in carved)
        if carved and total >= 1:
            raise ConfigError(
                f"{key}.splits carves {' and '.join(carved)} with fractions adding to {total:g}, which leaves no "
                "training rows; lower them."
            )
        if "{" not in section["input"] and not section["input"].strip():
            raise ConfigError(f"{key}.input is empty; name the input field or write a template.")
    known = set(builtin) | set(declared)
    experiments = config.get("experiments") or {}
    for kind in ("finetune", "baselines"):
        for i, entry in enumerate(experiments.get(kind, [])):
            tasks_named = [("task", entry.get("task"))]
            if kind == "finetune" and entry.get("init_from"):
                tasks_named.append(("init_from.task", entry["init_from"].get("task")))
            for where, task in tasks_named:
                if task not in known:
                    raise ConfigError(
                        f"experiments.{kind}.{i}.{where} is {task!r}, which is neither a built-in task "
                        f"({', '.join(builtin)}) nor declared under tasks with kind: custom."
                    )


class FileSource(data.Source):
    """A :class:`~tunebench.tasks.data.Source` over files named in the config rather than inside the mirror."""

    def __init__(self, task: str, key: str):
        super().__init__(task, Path("/"))
        self.key = key
        self.info = {"kind": "files", "files": {}}

    def _mirror_path(self, relpath: str) -> Path:
        path = Path(relpath)
        if not path.is_file():
            raise DataError(
                f"{self.key} names {relpath}, which is not a file; fix the path (relative to the working directory)."
            )
        self.info["files"][relpath] = {"sha256": data.sha256_file(path), "bytes": path.stat().st_size}
        return path


def expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


def source_files(config: Mapping[str, Any], name: str) -> list[str]:
    """The files a declared task reads (none for a hub source or a built-in task): inputs of its data rule,
    so that an edited file prepares the task again."""
    section = (config.get("tasks") or {}).get(name)
    if not is_custom(section) or source_kind(section["source"]) == "hub":
        return []
    splits = section["splits"]
    parts = [
        splits.get("train") or section["source"][source_kind(section["source"])],
        splits.get("validation"),
        splits.get("test"),
    ]
    return [expand(part) for part in parts if part]


def _text(value: Any, what: str) -> str:
    """A record's field as text: strings stripped, numbers written out, objects and lists as JSON."""
    if value is None:
        raise BadRow(f"missing {what}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float, dict, list)):
        raise BadRow(f"{what} is not text")
    text = (
        value.strip()
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False)
        if isinstance(value, (dict, list))
        else str(value)
    )
    if not text:
        raise BadRow(f"empty {what}")
    if "\x00" in text:
        raise BadRow(f"{what} contains a NUL byte")
    return text


class CustomTask(Task):
    """A task built from its ``tasks.NAME`` section."""

    def __init__(self, name: str, section: Mapping[str, Any]):
        from .scoring import generic

        self.name = name
        self.section = dict(section)
        self.label = section.get("label") or name.replace("_", " ").title()
        self.instruction = section.get("instruction") or DEFAULT_INSTRUCTION
        self.generic = generic.build(section["scorer"], section)
        self.primary_metric = self.metrics[0]
        self.max_new_tokens = section["max_new_tokens"]
        if section["scorer"] == "sql_execution":
            self.scorer_options = ("sql_databases", "sql_timeout_s", "sql_executor")
        self.baseline_variants = ("default",)

    # -- data ---------------------------------------------------------------------------------
    def _input(self, record: Mapping[str, Any]) -> str:
        template = self.section["input"]
        if "{" not in template:
            return _text(record.get(template), template)

        def fill(match: re.Match) -> str:
            return _text(record.get(match.group(1)), match.group(1))

        # A plain substitution, not str.format: field values are data and a template cannot reach attributes.
        return _FIELD.sub(fill, template).strip()

    def _row(self, part: str):
        target, context = self.section["target"], self.section.get("context")

        def make(index: int, record: Mapping[str, Any]) -> dict:
            answer = _text(record.get(target), target)
            row = {
                "id": f"{self.name}-{part}-{index:05d}",
                "prompt": self._input(record),
                "completion": answer,
                "answer": answer,
            }
            if context:
                row["context"] = _text(record.get(context), context)
            return row

        return make

    def prepare(self, options: Mapping[str, Any], mirror, seed: int) -> Prepared:
        source_options, splits = options["source"], options["splits"]
        kind = source_kind(source_options)
        key = f"tasks.{self.name}.source"
        if kind == "hub":
            source = data.Source(
                self.name,
                None,
                {
                    "id": source_options["hub"],
                    "config": source_options.get("config"),
                    "revision": source_options.get("revision"),
                },
            )
            parts = {
                "train": splits.get("train") or "train",
                "validation": splits.get("validation"),
                "test": splits.get("test"),
            }
        else:
            source = FileSource(self.name, key)
            parts = {
                "train": splits.get("train") or source_options[kind],
                "validation": splits.get("validation"),
                "test": splits.get("test"),
            }
        read = {}
        for split, part in parts.items():
            if not part:
                continue
            if kind == "hub":
                records = source.hub_split(part)
            else:
                path = expand(part)
                records = {"jsonl": source.jsonl, "csv": source.csv, "json": source.json_array}[kind](path)
                part = path
            read[split] = source.convert(part, records, self._row(split))
        carve = [split for split in ("validation", "test") if split not in read]
        notes = []
        if carve:
            fractions = {
                split: splits[f"{split}_fraction"] if split in carve else 0.0 for split in ("validation", "test")
            }
            carved = data.split_by_content(
                read["train"],
                lambda row: (self.name, row["prompt"], row["completion"]),
                fractions["validation"],
                fractions["test"],
            )
            read["train"] = carved["train"]
            for split in carve:
                read[split] = carved[split]
            notes.append(
                f"{' and '.join(carve).capitalize()} carved from the training rows by a hash of each row's input and "
                f"target ({', '.join(f'{s} {fractions[s]:g}' for s in carve)}); their ids keep the train prefix."
            )
        return source.prepared({split: read[split] for split in data.SPLITS}, notes=notes)

    # -- scoring and prompting ---------------------------------------------------------------
    @property
    def metrics(self) -> tuple[str, ...]:
        return self.generic.metrics

    def scorer_sources(self) -> tuple[str, ...]:
        sources = ("tasks/scoring/__init__.py", "tasks/scoring/generic.py", "tasks/custom.py")
        if self.section["scorer"] == "sql_execution":
            sources += ("tasks/scoring/sql.py", "tasks/scoring/sqlsuite.py")
        return sources

    def score(self, prediction: str, gold: Mapping[str, Any], **options: Any) -> dict[str, bool | None]:
        return self.generic.score(prediction, gold, **options)

    def extract(self, prediction: str) -> Any:
        return self.generic.extract(prediction)

    def examples(self, train: list[Mapping[str, Any]], count: int) -> list[Mapping[str, Any]]:
        """``count`` training rows chosen by a hash of their ids (independent of row order)."""
        cached = getattr(self, "_examples", None)
        if cached is None or cached[0] is not train or cached[1] != count:
            # The baseline asks once per test row with the same list; rank it once.
            ranked = sorted(train, key=lambda row: data.stable_int(self.name, "example", row["id"]))
            self._examples = cached = (train, count, ranked[:count])
        return cached[2]

    def baseline_messages(self, row, train, variant, options):
        if variant != "default":
            raise ConfigError(f"the {self.name} baseline has no prompt variant {variant!r}; use default.")
        messages = [{"role": "system", "content": self.instruction}]
        for example in self.examples(train, self.section["few_shot"]):
            messages += [
                {"role": "user", "content": example["prompt"]},
                {"role": "assistant", "content": example["completion"]},
            ]
        return messages + [{"role": "user", "content": row["prompt"]}]
