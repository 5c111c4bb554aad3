"""One task's dataset: prepared by its task module, checked, limited and written with its manifest.

It sits above :mod:`tunebench.tasks.data` (the plumbing every task module builds on) and
:mod:`tunebench.tasks`, so that data never imports the task modules that import it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import config as tb_config
from ..config import code as tb_code
from ..config import digests as tb_digests
from ..tasks import data, overlap
from ..tasks.data import Prepared
from ..util import fileio
from ..util.errors import DataError
from .formats import FORMATS

MANIFEST_VERSION = 1


def check_bad_rows(task: str, prepared: Prepared, max_bad_fraction: float) -> None:
    """Refuse a part whose share of malformed records exceeds ``data.max_bad_fraction``."""
    read = prepared.source.get("rows_read", {})
    for part, reasons in prepared.bad_rows.items():
        bad = sum(reasons.values())
        total = read.get(part, 0)
        if total and bad / total > max_bad_fraction:
            worst = max(reasons, key=reasons.get)
            raise DataError(
                f"{task}: {bad} of {total} records of {part} are malformed ({bad / total:.1%}, most often: {worst}), "
                f"more than data.max_bad_fraction = {max_bad_fraction}; repair the source or raise that limit."
            )


def check_not_empty(task: Any, prepared: Prepared) -> None:
    """Refuse a split the task needs that came out empty (a header-only CSV, an empty JSONL file)."""
    for split in task.required_splits:
        if not prepared.splits.get(split):
            read = prepared.source.get("rows_read", {})
            parts = ", ".join(f"{part} ({count} records)" for part, count in read.items()) or "no source"
            raise DataError(
                f"{task.name}: the {split} split has no usable rows (read: {parts}); "
                "replace the empty or damaged source file with the original."
            )


def _found(files: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    return {part: (info["records"], info["sha256"]) for part, info in files.items() if "records" in info}


def check_hub_splits(task: Any, source: Mapping[str, Any]) -> None:
    """Refuse a split of a built-in task's default hub dataset that holds other than the published number of
    records (a download cut short, a revision with rows added or lost)."""
    if source.get("id") != task.default_hub_id():
        return
    for split, records in source["splits"].items():
        want = task.hub_records.get(split)
        if want is not None and records != want:
            raise DataError(
                f"{task.name}: split {split} of the hub dataset {source['id']} holds {records:,} records, not the "
                f"published {want:,}; delete its copy from the hub cache and fetch it again, or set "
                "data.verify_sources to false to read another revision as it is."
            )


def check_sources(task: Any, prepared: Prepared, ledger: Path | None) -> None:
    """Refuse a source file that is not what it should be: for a built-in task's mirror file, the published
    release; for a task's own files, what the ledger recorded when they were first used (recorded now if new)."""
    source = prepared.source
    if source.get("kind") == "hub":
        check_hub_splits(task, source)
        return
    if source.get("kind") == "mirror":
        expected, remedy = (
            dict(task.mirror_files),
            (
                "replace it with the original (the mirror's SOURCES.md lists each file), or set data.verify_sources to "
                "false for a mirror of your own"
            ),
        )
        where = Path(source["mirror"])
    elif source.get("kind") == "files" and ledger is not None:
        where = Path()
        try:
            expected = {part: tuple(value) for part, value in json.loads(ledger.read_text(encoding="utf-8")).items()}
        except FileNotFoundError:
            expected = {}
        except (OSError, ValueError, TypeError):
            raise DataError(f"{ledger} is not a record of source files; delete it to record them again.") from None
        remedy = f"restore it, or delete {ledger} if it changed on purpose"
    else:
        return
    found = _found(source["files"])
    for part, (records, sha256) in found.items():
        if part in expected and (records, sha256) != tuple(expected[part]):
            want_records, want_sha = expected[part]
            raise DataError(
                f"{task.name}: {where / part} holds {records:,} records with sha256 {sha256[:12]}…, not the expected "
                f"{want_records:,} records with sha256 {want_sha[:12]}…; {remedy}."
            )
    if source.get("kind") == "files" and ledger is not None and set(found) - set(expected):
        fileio.write_atomic(ledger, json.dumps(dict(expected, **found), indent=2, sort_keys=True) + "\n")


def prepare(
    task_name: str,
    config: tb_config.Experiment,
    seed: int | None = None,
    ledger: Path | None = None,
    **overrides: Any,
) -> tuple[Prepared, dict]:
    """Load and format one task as ``config`` says; returns the limited splits and the manifest.

    ``overrides`` replace keys of ``tasks.<task_name>`` (the CLI's ``--rows``/``--digits``). ``ledger`` is the
    file that records a declared task's source files on first use (none: not recorded, not checked).
    """
    task = config.tasks.get(task_name)
    seed = config["seed"] if seed is None else seed
    options = dict(config["tasks"][task_name], **overrides)
    mirror = tb_config.data_mirror(config)
    prepared = task.prepare(options, mirror, seed)
    if config["data"]["verify_sources"]:
        check_sources(task, prepared, ledger)
    max_bad = config["data"]["max_bad_fraction"]
    check_bad_rows(task_name, prepared, max_bad)
    check_not_empty(task, prepared)

    prepared.splits = {split: prepared.splits.get(split, []) for split in data.SPLITS}
    # Before the limits, so that a limit draws from rows that are already clean.
    overlaps = overlap.apply(task_name, prepared.splits, config["data"]["overlap"])

    limit = options.get("limit") or {}  # the schema leaves an absent limit absent: it is part of the data's digest
    full_sizes = {split: len(prepared.splits.get(split, [])) for split in data.SPLITS}
    prepared.splits = {
        split: data.limit_rows(prepared.splits.get(split, []), limit.get(split), seed, task_name, split)
        for split in data.SPLITS
    }
    for split in data.SPLITS:
        ids = [row["id"] for row in prepared.splits[split]]
        if len(set(ids)) != len(ids):
            raise DataError(f"{task_name}: the {split} split repeats row ids; this is a bug in the task module.")
    # The digest of the settings actually used (command-line overrides included), as the workflow
    # computes it from the config: the data rule's stamp and param carry the same value.
    effective = tb_config.Experiment.of(dict(config, seed=seed, tasks=dict(config["tasks"], **{task_name: options})))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "task": task_name,
        tb_digests.KEY: tb_digests.data_hash(effective, task_name),
        "code": tb_code.provenance(data=tb_digests.data_code(task)),
        "seed": seed,
        "source": prepared.source,
        "options": {key: value for key, value in sorted(options.items()) if key not in ("hub", "limit")},
        "bad_rows": prepared.bad_rows,
        "bad_rows_total": sum(sum(reasons.values()) for reasons in prepared.bad_rows.values()),
        "max_bad_fraction": max_bad,
        "filters": [
            {
                "name": f.name,
                "reason": f.reason,
                "dropped": {split: f.dropped.get(split, 0) for split in data.SPLITS},
                "dropped_total": sum(f.dropped.values()),
            }
            for f in prepared.filters
        ],
        "overlap": overlaps,
        "rows_before_limit": full_sizes,
        "limit": {split: limit.get(split) for split in data.SPLITS},
        "rows": {split: len(prepared.splits[split]) for split in data.SPLITS},
        "notes": prepared.notes,
        "format": {
            "files": {split: f"{split}.jsonl" for split in data.SPLITS},
            "encoding": "JSON Lines, UTF-8, one row per line, keys in a fixed order",
            "fields": _fields(prepared.splits),
            "prompt_formats": list(FORMATS),
            "markers": "prompt and completion hold plain text; tunebench.stages.formats adds the markers of the chosen "
            "prompt format",
        },
    }
    return prepared, manifest


def _fields(splits: Mapping[str, list[dict]]) -> list[str]:
    keys: set[str] = set()
    for rows in splits.values():
        for row in rows:
            keys.update(row)
    return list(data.LEADING_FIELDS) + sorted(keys - set(data.LEADING_FIELDS))


def write(out_dir: Path, prepared: Prepared, manifest: dict) -> dict:
    """Write the three splits and the manifest (with each file's sha256) into ``out_dir``."""
    out_dir = Path(out_dir)
    hashes = {split: data.write_rows(out_dir / f"{split}.jsonl", prepared.splits[split]) for split in data.SPLITS}
    manifest = dict(manifest)
    manifest["format"] = dict(manifest["format"], sha256=hashes)
    fileio.write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
