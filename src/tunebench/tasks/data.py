"""The data stage's plumbing: where raw rows come from, how bad ones are counted, how splits and
limits are drawn, and how prepared splits are written and read back.

A task module reads its raw splits through a :class:`Source` (the mirror directory or the Hugging
Face hub), turns each raw record into a prepared row with a function that raises :class:`BadRow`
for a record it cannot use, and returns a :class:`Prepared`. :func:`tunebench.stages.dataset.prepare` then
checks the share of bad rows, applies the configured limits and writes ``{split}.jsonl`` plus
``manifest.json``, with fixed key order so that the same inputs give the same bytes. Nothing here
knows a task: the task modules build on this module, not the other way round.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..util import fileio
from ..util.errors import DataError, DataUnavailable
from ..util.staging import MIRROR_ENV

SPLITS = ("train", "validation", "test")
LEADING_FIELDS = ("id", "prompt", "completion", "answer")
# Text split at line breaks ends in an empty string when the file ends with one: a non-empty last
# piece is a last line without its line break, cut short when it does not parse.
CUT_SHORT = "last line has no line break and does not parse (the file may be cut short)"


class BadRow(ValueError):
    """A source row that cannot become an example; the message is the reason counted in the manifest."""


@dataclass
class Filter:
    """A deliberate filter applied to well-formed rows, reported in the manifest."""

    name: str
    reason: str
    dropped: dict[str, int] = field(default_factory=dict)  # per split


@dataclass
class Prepared:
    """A task's dataset after loading and formatting, before it is written."""

    splits: dict[str, list[dict]]
    source: dict[str, Any]  # hub id + revision, or mirror files with their sha256, or generator settings
    filters: list[Filter] = field(default_factory=list)
    bad_rows: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> reason -> count
    notes: list[str] = field(default_factory=list)  # what a reader of the manifest must know


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_int(*parts: Any) -> int:
    """A 64-bit integer fixed by ``parts`` (unlike ``hash()``, the same in every process)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def stable_fraction(*parts: Any) -> float:
    """A number in [0, 1) fixed by ``parts``; used to assign rows to splits by their content."""
    return stable_int(*parts) / 2**64


def rng(seed: int, *labels: Any) -> random.Random:
    """A generator seeded by the experiment seed and what it is used for, so uses never share a stream."""
    return random.Random(stable_int(seed, *labels))


def split_by_content(
    rows: list[dict], key: Callable[[dict], Iterable[Any]], validation_fraction: float, test_fraction: float
) -> dict[str, list[dict]]:
    """Assign each row to a split by a hash of its content: independent of row order and reproducible."""
    if validation_fraction + test_fraction >= 1:
        raise DataError(
            f"validation_fraction ({validation_fraction}) plus test_fraction ({test_fraction}) leave no training "
            "rows; lower them."
        )
    out: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for row in rows:
        u = stable_fraction(*key(row))
        split = "test" if u < test_fraction else "validation" if u < test_fraction + validation_fraction else "train"
        out[split].append(row)
    return out


def limit_rows(rows: list[dict], limit: int | None, seed: int, *labels: Any) -> list[dict]:
    """At most ``limit`` rows chosen by a seeded shuffle, kept in their original order."""
    if limit is None or len(rows) <= limit:
        return list(rows)
    chosen = set(rng(seed, "limit", *labels).sample(range(len(rows)), limit))
    return [row for i, row in enumerate(rows) if i in chosen]


class Source:
    """Reads one task's raw records from the mirror or the hub and keeps the manifest's account of them.

    Every part read (a mirror file or a hub split) is listed in :attr:`info` with its size, and its
    malformed records are counted by reason in :attr:`bad`. ``mirror=None`` reads the hub.
    """

    def __init__(self, task: str, mirror: Path | None, hub: Mapping[str, Any] | None = None):
        self.task = task
        self.mirror = mirror
        self.hub = dict(hub or {})
        self.bad: dict[str, Counter] = {}
        self.read: dict[str, int] = {}
        if mirror is not None:
            self.info: dict[str, Any] = {"kind": "mirror", "mirror": str(mirror), "files": {}}
        else:
            self.info = {
                "kind": "hub",
                "id": self.hub.get("id"),
                "config": self.hub.get("config"),
                "revision": self.hub.get("revision"),
                "splits": {},
            }

    # -- mirror ---------------------------------------------------------------------------
    def has(self, relpath: str) -> bool:
        return self.mirror is not None and (self.mirror / relpath).is_file()

    def _mirror_path(self, relpath: str) -> Path:
        path = self.mirror / relpath
        if not path.is_file():
            raise DataError(
                f"the data mirror {self.mirror} has no {relpath}; copy that file into it or unset "
                f"data.mirror and {MIRROR_ENV} to read {self.task} from the hub."
            )
        self.info["files"][relpath] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        return path

    def _account(self, part: str, records: list[Any], bad: Counter) -> None:
        self.read[part] = len(records) + sum(bad.values())
        self.bad[part] = bad
        if self.mirror is not None:
            self.info["files"][part]["records"] = self.read[part]
        else:
            self.info["splits"][part] = self.read[part]

    def _text(self, path: Path) -> str:
        """The file as text: UTF-8, a byte-order mark dropped (spreadsheet exports write one)."""
        try:
            return path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(f"{path} is not UTF-8 text; replace it with the original file.") from None

    def jsonl(self, relpath: str) -> list[Any]:
        """Records of a JSON Lines file; blank lines are skipped, unparsable ones counted as bad."""
        path = self._mirror_path(relpath)
        records, bad = [], Counter()
        lines = _lines(self._text(path))
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if "\x00" in line:
                bad["line contains a NUL byte"] += 1
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                bad[CUT_SHORT if number == len(lines) else "line is not valid JSON"] += 1
            except ValueError:  # an integer beyond Python's 4,300-digit conversion limit
                bad["line holds a number too long to read"] += 1
        self._account(relpath, records, bad)
        return records

    def csv(self, relpath: str) -> list[dict]:
        """Rows of a CSV file with a header, as dicts, one physical line per row.

        The mirrored CSV files hold no line breaks inside fields, so each line is parsed on its own: a
        quote left open (a file cut short, a damaged row) makes that one line a bad row instead of
        swallowing the lines after it into one field. Rows with the wrong number of fields, NUL bytes
        or broken quoting are counted as bad.
        """
        path = self._mirror_path(relpath)
        records, bad = [], Counter()
        lines = _lines(self._text(path))
        header = _csv_fields(lines[0]) if lines else None
        if not header or not any(field.strip() for field in header):
            raise DataError(f"{path} has no header row; replace it with the original CSV file.")
        for number, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            if "\x00" in line:
                bad["row contains a NUL byte"] += 1
                continue
            fields = _csv_fields(line)
            if number == len(lines) and (fields is None or len(fields) != len(header)):
                bad[CUT_SHORT] += 1
            elif fields is None:
                bad["row has an unclosed or misplaced quote"] += 1
            elif len(fields) != len(header):
                bad[f"row has {len(fields)} fields, the header {len(header)}"] += 1
            else:
                records.append(dict(zip(header, fields)))
        self._account(relpath, records, bad)
        return records

    def json_array(self, relpath: str) -> list[Any]:
        """Elements of a file holding one JSON array."""
        path = self._mirror_path(relpath)
        try:
            records = json.loads(self._text(path))
        except ValueError as exc:  # JSONDecodeError, or an integer beyond the 4,300-digit limit
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "a number too long to read"
            raise DataError(f"{path} is not a JSON document ({reason}); replace it with the original file.") from None
        if not isinstance(records, list):
            raise DataError(f"{path} should hold one JSON array of records; replace it with the original file.")
        self._account(relpath, records, Counter())
        return records

    # -- hub ------------------------------------------------------------------------------
    def hub_split(self, split: str) -> list[dict]:
        """Records of one split of the configured hub dataset (``datasets.load_dataset``)."""
        hub_id = self.hub.get("id")
        if not hub_id:
            raise DataUnavailable(
                f"tasks.{self.task}.hub.id is empty and no mirror is set; name the hub dataset or set "
                f"data.mirror (or {MIRROR_ENV}) to a local mirror directory."
            )
        from ..util import staging

        # The repository's snapshot in the hub cache (fetched now, or staged by `tunebench fetch` for an
        # offline job) is loaded as a local directory: datasets reads its card's configs as the hub would.
        try:
            snapshot = staging.dataset_snapshot(self.hub, self.task)
            import datasets

            dataset = datasets.load_dataset(str(snapshot), self.hub.get("config"), split=split)
        except DataUnavailable:  # offline and not staged: the staging sentence names the item
            raise
        except Exception as exc:  # no network, unknown id, gated, unknown config or split: not available
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataUnavailable(
                f"{self.task}: the hub dataset {hub_id} (split {split}) could not be loaded ({reason}); set "
                "data.mirror "
                f"in the config or the environment variable {MIRROR_ENV} to a local dataset mirror, "
                "or make the Hugging Face hub reachable."
            ) from None
        # The snapshot directory is named by the commit the revision resolved to: the manifest pins it,
        # and says whether the job read a staged cache with the hub switched off.
        self.info.setdefault("resolved_revision", None if snapshot == Path(hub_id).expanduser() else snapshot.name)
        self.info.setdefault("offline", staging.offline())
        records = [dict(record) for record in dataset]
        self._account(split, records, Counter())
        return records

    # -- conversion -----------------------------------------------------------------------
    def convert(self, part: str, records: Iterable[Any], make: Callable[[int, Mapping[str, Any]], dict]) -> list[dict]:
        """``make(index, record)`` for every record of ``part``; records it rejects are counted, not kept."""
        rows = []
        for index, record in enumerate(records):
            try:
                if not isinstance(record, Mapping):
                    raise BadRow("record is not an object")
                rows.append(make(index, record))
            except BadRow as exc:
                self.bad[part][str(exc)] += 1
        return rows

    def prepared(self, splits: dict[str, list[dict]], **kwargs: Any) -> Prepared:
        source = dict(self.info, rows_read=dict(self.read))
        bad = {part: dict(sorted(counts.items())) for part, counts in self.bad.items()}
        return Prepared(splits=splits, source=source, bad_rows=bad, **kwargs)


def _lines(text: str) -> list[str]:
    """Lines split at \\n (and \\r\\n) only: str.splitlines would also split at \\x85 or U+2028 inside a field."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _csv_fields(line: str) -> list[str] | None:
    """The fields of one CSV line, or None when its quoting is broken (strict parsing)."""
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def text_field(record: Mapping[str, Any], key: str, what: str | None = None) -> str:
    """A non-empty string field of a raw record, stripped; anything else is a bad row."""
    value = record.get(key)
    if value is None:
        raise BadRow(f"missing {what or key}")
    if not isinstance(value, str):
        raise BadRow(f"{what or key} is not text")
    value = value.strip()
    if not value:
        raise BadRow(f"empty {what or key}")
    if "\x00" in value:
        raise BadRow(f"{what or key} contains a NUL byte")
    return value


def dumps_row(row: Mapping[str, Any]) -> str:
    """One JSON line: the contract's fields first, then the task's own fields in sorted order."""
    ordered = {key: row[key] for key in LEADING_FIELDS if key in row}
    ordered.update((key, row[key]) for key in sorted(row) if key not in ordered)
    return json.dumps(ordered, ensure_ascii=False)


def write_rows(path: Path, rows: Iterable[Mapping[str, Any]]) -> str:
    """Write prepared rows, the contract's fields first (see :func:`dumps_row`); returns the file's sha256."""
    data = "".join(dumps_row(row) + "\n" for row in rows).encode("utf-8")
    fileio.write_atomic(path, data)  # a unique temporary name: two runs into one directory do not collide
    return hashlib.sha256(data).hexdigest()


def read_rows(path: Path) -> list[dict]:
    """Rows of a prepared split file, each checked for the contract's fields."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; run the data stage first (tunebench data TASK).")
    rows = []
    for number, row in fileio.read_jsonl(path, "rebuild the file with tunebench data"):
        missing = [key for key in LEADING_FIELDS if not isinstance(row, dict) or key not in row]
        if missing:
            raise DataError(f"{path} line {number} lacks {', '.join(missing)}; rebuild the file with tunebench data.")
        rows.append(row)
    return rows


def read_split(data_dir: Path, split: str) -> list[dict]:
    """Rows of ``{data_dir}/{split}.jsonl``."""
    return read_rows(Path(data_dir) / f"{split}.jsonl")
