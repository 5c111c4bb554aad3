"""Files every stage shares: JSON Lines read and written, and files replaced atomically.

Writers go through a temporary file renamed into place, so a reader (another job, a resumed run)
never sees half a file. Readers name the file and line of a bad record and what to do about it.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import DataError, UserError

# Faults of the file system a user can fix, and what to do about each.
_REMEDIES = {
    errno.ENOSPC: "the file system is full; free space there or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free space there or write elsewhere",
    errno.EACCES: "permission denied; make the directory writable or write elsewhere",
    errno.EPERM: "permission denied; make the directory writable or write elsewhere",
    errno.EROFS: "the file system is read-only; write elsewhere",
}


class WriteFailed(UserError):
    """A file could not be written for a reason the user can fix; nothing partial is left behind."""

    def __init__(self, path: Path, size: int, code: int):
        super().__init__(f"could not write {path} ({size:,} bytes): {_REMEDIES[code]}.")
        self.errno = code


class BadLine(ValueError):
    """A line of a JSON Lines file that is not JSON (or holds an integer too long to convert)."""

    def __init__(self, path: Path, number: int):
        super().__init__(f"{path} line {number} is not valid JSON or holds a number too long to read")
        self.path, self.number = path, number


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a uniquely named temporary file beside it.

    A full disk, a read-only file system or a permission fault ends in one sentence naming the path and
    the bytes wanted (:class:`WriteFailed`), with neither the temporary file nor a partial ``path`` left.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    # Process id plus random bits: unique across processes and threads. Opened with "x" (not through
    # tempfile, whose files are private) so that the result gets the usual umask-based permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in _REMEDIES:
            raise WriteFailed(path, len(data), exc.errno) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def jsonl_text(records: Iterable[Any]) -> str:
    """One JSON line per record (UTF-8 kept as is)."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    write_atomic(path, jsonl_text(records))


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` of every non-blank line; a line that is not JSON raises :class:`BadLine`."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except ValueError:  # not JSON, or an integer beyond the 4,300-digit conversion limit
                raise BadLine(Path(path), number) from None


def read_jsonl(path: Path, remedy: str) -> list[tuple[int, Any]]:
    """Every ``(line number, record)`` of ``path``; a bad line stops with one sentence that ends in ``remedy``."""
    try:
        return list(iter_jsonl(path))
    except BadLine as bad:
        raise DataError(f"{bad}; {remedy}.") from None
