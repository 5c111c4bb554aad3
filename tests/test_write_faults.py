"""A file system that refuses a write (full, read-only): one sentence naming the path and the bytes, no partial file.

As root the test mounts a real 64 KiB tmpfs (and remounts it read-only); otherwise a directory without write
permission refuses the write.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tunebench.commands import cli


def _can_mount() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a file system that is full after 64 KiB (or, without root, not writable at all)."""
    where = tmp_path / "disk"
    where.mkdir()
    if _can_mount():
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=True)
        yield where, "the file system is full"
        subprocess.run(["umount", str(where)], check=True)
    else:
        where.chmod(0o555)
        yield where, "permission denied"
        where.chmod(0o755)


def _one_sentence(capsys, path, reason):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert f"could not write {path} (" in err and " bytes): " in err and reason in err
    return err


def _leftovers(directory):
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


def test_data_stage_on_a_full_disk(small_disk, with_mirror, capsys):
    disk, reason = small_disk
    out = disk / "viggo"
    assert cli.main(["data", "viggo", "--out-dir", str(out)]) == 2
    err = _one_sentence(capsys, out / "train.jsonl", reason)
    assert int(err.split(" (")[1].split(" bytes")[0].replace(",", "")) > 64 * 1024  # the whole split was wanted
    assert _leftovers(out) == []  # neither the split, a temporary file nor a manifest


@pytest.mark.skipif(not _can_mount(), reason="remounting read-only needs root")
def test_data_stage_on_a_read_only_file_system(small_disk, with_mirror, capsys):
    disk, _ = small_disk
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    assert cli.main(["data", "multiplication", "--rows", "200", "--out-dir", str(disk / "m")]) == 2
    _one_sentence(capsys, disk / "m" / "train.jsonl", "read-only")


def test_per_example_verdicts_on_a_full_disk(small_disk, tmp_path, capsys):
    disk, reason = small_disk
    rows = [{"id": str(i), "prediction": "step " * 100 + f"#### {i}", "answer": str(i)} for i in range(300)]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    verdicts = disk / "verdicts.jsonl"
    assert cli.main(["score", "gsm8k", str(predictions), "--per-example", str(verdicts)]) == 2
    _one_sentence(capsys, verdicts, reason)
    assert _leftovers(disk) == []
