"""The long-multiplication generator: arithmetic of every row, determinism, disjoint splits, speed."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest

from tunebench.commands import cli
from tunebench.tasks import multiplication
from tunebench.util.errors import ConfigError

PAIR_LINE = re.compile(r"(\d)\*(\d)=(\d+), shift (\d+): (\d+)")


def check_completion(row: dict) -> None:
    """Re-derive every number of a worked answer independently of the generator."""
    a, b = row["a"], row["b"]
    lines = row["completion"].splitlines()
    assert row["prompt"] == f"What is {a} * {b}?"
    assert row["answer"] == str(a * b)
    # Both operands as place values.
    for line, n in zip(lines[:2], (a, b)):
        head, parts = line.split(" = ")
        assert int(head) == n
        values = [int(v) for v in parts.split("+")]
        assert sum(values) == n and len(values) == len(str(n))
    # One line per digit pair, shifted by both places.
    pairs = [PAIR_LINE.fullmatch(line) for line in lines[2:-2]]
    assert all(pairs), lines
    expected = [
        (int(da), int(db), i + j) for i, da in enumerate(reversed(str(a))) for j, db in enumerate(reversed(str(b)))
    ]
    partials = []
    for match, (da, db, shift) in zip(pairs, expected, strict=True):
        d1, d2, product, k, value = map(int, match.groups())
        assert (d1, d2, k) == (da, db, shift)
        assert product == da * db and value == product * 10**shift
        partials.append(value)
    # The sum of every partial product, then the product as the very end.
    summed, total = lines[-2].removeprefix("Sum: ").split(" = ")
    assert [int(v) for v in summed.split("+")] == partials
    assert int(total) == sum(partials) == a * b
    assert lines[-1] == f"{a} * {b} = {a * b}"
    assert row["completion"].endswith(str(a * b))


def test_every_row_of_the_default_dataset_is_right_and_quick():
    start = time.perf_counter()
    splits = multiplication.generate(40000, (4, 4), 42, 0.025, 0.0125)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"generating 40,000 rows took {elapsed:.1f} s"
    assert {k: len(v) for k, v in splits.items()} == {"train": 38500, "validation": 1000, "test": 500}
    for rows in splits.values():
        for row in rows:
            assert 1000 <= row["a"] <= 9999 and 1000 <= row["b"] <= 9999
            check_completion(row)


def test_no_problem_appears_twice_in_any_split():
    splits = multiplication.generate(40000, (4, 4), 42, 0.025, 0.0125)
    owner = {}
    for split, rows in splits.items():
        for row in rows:
            key = frozenset((row["a"], row["b"]))  # a * b and b * a are the same problem
            assert key not in owner, f"{row['id']} is in {owner[key]} and {split}"
            owner[key] = split


def test_operand_digits_are_configurable():
    splits = multiplication.generate(300, (2, 3), 1, 0.1, 0.1)
    rows = [row for rows in splits.values() for row in rows]
    assert len(rows) == 300
    assert all(10 <= r["a"] <= 99 and 100 <= r["b"] <= 999 for r in rows)
    for row in rows:
        check_completion(row)
    # 1 x 1 digits: 45 distinct unordered problems exist (81 ordered minus 36 mirrored ones).
    assert (
        len({frozenset((r["a"], r["b"])) for s in multiplication.generate(45, (1, 1), 0, 0.1, 0.1).values() for r in s})
        == 45
    )
    with pytest.raises(ConfigError, match="tasks.multiplication.rows"):
        multiplication.generate(46, (1, 1), 0, 0.1, 0.1)


def _cli_file(tmp_path, name, *args):
    out = tmp_path / name
    assert cli.main(["data", "multiplication", *args, "--out", str(out)]) == 0
    return out


def test_cli_contract_is_byte_identical_and_seeded(tmp_path, capsys):
    first = _cli_file(tmp_path, "a.jsonl", "--rows", "2000", "--seed", "7")
    second = _cli_file(tmp_path, "b.jsonl", "--rows", "2000", "--seed", "7")
    other = _cli_file(tmp_path, "c.jsonl", "--rows", "2000", "--seed", "8")
    assert first.read_bytes() == second.read_bytes()
    assert hashlib.sha256(first.read_bytes()).digest() != hashlib.sha256(other.read_bytes()).digest()
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(rows) == 2000
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert len({r["id"] for r in rows}) == 2000
    for row in rows:
        assert row["answer"] == str(row["a"] * row["b"])
        check_completion(row)


def test_cli_digits_and_refusals(tmp_path, capsys):
    out = _cli_file(tmp_path, "d.jsonl", "--rows", "50", "--seed", "1", "--digits", "3", "2")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(100 <= r["a"] <= 999 and 10 <= r["b"] <= 99 for r in rows)
    assert cli.main(["data", "viggo", "--rows", "50", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "--rows and --digits apply to the generated multiplication task" in capsys.readouterr().err
    assert (
        cli.main(["data", "multiplication", "--rows", "100", "--digits", "1", "1", "--out", str(tmp_path / "y.jsonl")])
        == 2
    )
    assert "only 45 distinct" in capsys.readouterr().err
