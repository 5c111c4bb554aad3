"""Each dataset loader on the local mirror, with the paper config and the demo config."""

from __future__ import annotations

import json
import random
import re

import pytest
import yaml

from tunebench import config
from tunebench.commands import cli
from tunebench.stages import dataset
from tunebench.tasks import data, gsm8k, mathqa, sql, viggo

PAPER = config.ROOT / "config" / "config.yaml"
DEMO = config.ROOT / "config" / "demo.yaml"


@pytest.fixture(scope="module")
def paper(mirror):
    cfg = config.load(PAPER)
    cfg["data"]["mirror"] = str(mirror)
    return cfg


def _ids(prepared):
    return {split: {row["id"] for row in rows} for split, rows in prepared.splits.items()}


def _disjoint(prepared):
    ids = _ids(prepared)
    assert not ids["train"] & ids["validation"]
    assert not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]


def _contract(prepared):
    for rows in prepared.splits.values():
        for row in rows:
            assert list(row)[:4] == ["id", "prompt", "completion", "answer"]
            assert row["prompt"].strip() and row["completion"].strip() and str(row["answer"]).strip()
            assert "<START_Q>" not in row["prompt"] and "### Instruction" not in row["prompt"]


def test_viggo_from_the_mirror_matches_the_published_split_sizes(paper, mirror):
    prepared, manifest = dataset.prepare("viggo", paper)
    # The published 5,103 training rows repeat 7 sentence and meaning-representation pairs; those leave training.
    assert manifest["source"]["rows_read"]["viggo/train.csv"] == 5103
    assert manifest["overlap"]["duplicates"]["train"] == {"exact": 7, "normalized": 7}
    assert manifest["rows"] == {"train": 5096, "validation": 714, "test": 1083}
    assert manifest["bad_rows_total"] == 0
    # The mirror's files are recorded by hash (the values SOURCES.md publishes).
    files = manifest["source"]["files"]
    assert files["viggo/train.csv"]["sha256"] == "bff4ce77f71feb6790b4f5b62150027573423ebd8673cc7b2517e0f53c616505"
    assert files["viggo/test.csv"]["records"] == 1083
    _contract(prepared)
    _disjoint(prepared)
    first = prepared.splits["train"][0]
    assert first["prompt"].startswith("Dirt: Showdown from 2012 is a sport racing game")  # the ref sentence
    assert first["completion"] == first["answer"] and first["answer"].startswith("inform(name[Dirt: Showdown]")
    functions = {viggo.function_of(row["answer"]) for row in prepared.splits["test"]}
    assert functions == set(viggo.FUNCTIONS)


def test_viggo_baseline_prompt_has_one_example_per_function(paper):
    prepared, _ = dataset.prepare("viggo", paper)
    task = viggo.TASK
    row = prepared.splits["test"][0]
    messages = task.baseline_messages(row, prepared.splits["train"], "default", paper["tasks"][task.name])
    text = messages[0]["content"] + messages[1]["content"]
    for name in viggo.FUNCTIONS + viggo.ATTRIBUTES:
        assert name in text
    shots = re.findall(r"Meaning representation: (\w+)\(", messages[1]["content"])
    assert shots == list(viggo.FUNCTIONS)
    assert messages[1]["content"].endswith(f"Sentence: {row['prompt']}\nMeaning representation:")
    # Deterministic and independent of the order of the training rows.
    shuffled = list(prepared.splits["train"])
    random.Random(3).shuffle(shuffled)
    assert task.baseline_messages(row, shuffled, "default", {}) == messages


def test_gsm8k_from_the_mirror(paper):
    prepared, manifest = dataset.prepare("gsm8k", paper)
    assert manifest["rows"] == {"train": 7473 - 500, "validation": 500, "test": 1319}
    _contract(prepared)
    _disjoint(prepared)
    for rows in prepared.splits.values():
        for row in rows:
            final = row["completion"].rsplit("####", 1)[1].strip().replace(",", "")
            assert row["answer"] == final and re.fullmatch(r"-?\d+(\.\d+)?", row["answer"])
    assert sum("<<" in row["completion"] for row in prepared.splits["test"]) == 1301  # as SOURCES.md counts


def test_gsm8k_calculator_notes_can_be_stripped(paper):
    cfg = json.loads(json.dumps(paper.config))
    cfg["tasks"]["gsm8k"]["strip_calculator_notes"] = True
    prepared, manifest = dataset.prepare("gsm8k", config.validate(cfg))
    assert not any(
        "<<" in row["completion"] or ">>" in row["completion"] for rows in prepared.splits.values() for row in rows
    )
    assert any("removed" in note for note in manifest["notes"])


def test_gsm8k_few_shot_prompt(paper):
    prepared, _ = dataset.prepare("gsm8k", paper)
    row = prepared.splits["test"][5]
    messages = gsm8k.TASK.baseline_messages(row, prepared.splits["train"], "default", {"few_shot": 8})
    user = messages[1]["content"]
    assert user.count("Problem:") == 9 and user.count("####") == 8
    assert user.endswith(f"Problem: {row['prompt']}\nSolution:")
    zero = gsm8k.TASK.baseline_messages(row, prepared.splits["train"], "default", {"few_shot": 0})
    assert zero[1]["content"] == f"Problem: {row['prompt']}\nSolution:"


def test_sql_from_the_mirror_sample(paper):
    prepared, manifest = dataset.prepare("sql", paper)
    assert manifest["source"]["files"]["sql-create-context/sample.jsonl"]["records"] == 2410
    varchar = next(f for f in manifest["filters"] if f["name"] == "varchar_numeric")
    total = sum(manifest["rows"].values())
    assert varchar["dropped_total"] > 500  # the mirror's README counts 605 such rows with a simpler rule
    assert total + varchar["dropped_total"] == 2410
    assert any("sample" in note for note in manifest["notes"])
    _contract(prepared)
    _disjoint(prepared)
    for rows in prepared.splits.values():
        for row in rows:
            assert row["question"] in row["prompt"] and row["context"] in row["prompt"]
            assert not sql.compares_varchar_with_number(row["answer"], sql.schema_of(row["context"]))
    # The switch keeps them.
    cfg = json.loads(json.dumps(paper.config))
    cfg["tasks"]["sql"]["drop_varchar_numeric"] = False
    _, kept = dataset.prepare("sql", config.validate(cfg))
    assert sum(kept["rows"].values()) == 2410
    assert [f["name"] for f in kept["filters"]] == ["duplicate"]


def test_sql_split_depends_on_content_not_order(paper):
    prepared, _ = dataset.prepare("sql", paper)
    rows = [row for split in data.SPLITS for row in prepared.splits[split]]
    random.Random(0).shuffle(rows)
    again = data.split_by_content(rows, lambda row: (row["id"],), 0.02, 0.02)
    assert {s: sorted(r["id"] for r in again[s]) for s in data.SPLITS} == {
        s: sorted(_ids(prepared)[s]) for s in data.SPLITS
    }


@pytest.mark.parametrize(
    "context,query,expected",
    [
        ("CREATE TABLE head (age INTEGER)", "SELECT COUNT(*) FROM head WHERE age > 56", False),
        ("CREATE TABLE head (age VARCHAR)", "SELECT COUNT(*) FROM head WHERE age > 56", True),
        ("CREATE TABLE t (name VARCHAR, n INTEGER)", 'SELECT n FROM t WHERE name = "5"', False),
        ("CREATE TABLE t (a VARCHAR)", "SELECT * FROM t WHERE a BETWEEN 20 AND 25", True),
        ("CREATE TABLE t (p VARCHAR, s VARCHAR)", "SELECT p FROM t WHERE s = 71 - 66 - 74 = 211", True),
        ("CREATE TABLE t (sp VARCHAR, fs VARCHAR)", "SELECT COUNT(*) FROM t WHERE sp + fs < 27", True),
        ("CREATE TABLE a (x VARCHAR); CREATE TABLE b (x INTEGER)", "SELECT * FROM b AS T2 WHERE T2.x = 3", False),
        ("CREATE TABLE a (x VARCHAR); CREATE TABLE b (x INTEGER)", "SELECT * FROM a AS T1 WHERE T1.x = 3", True),
        ("CREATE TABLE t (y VARCHAR)", "SELECT MIN(1 AS z) FROM t WHERE y > 273.5", True),  # unparsable: regex fallback
    ],
)
def test_varchar_number_comparisons(context, query, expected):
    assert sql.compares_varchar_with_number(query, sql.schema_of(context)) is expected


def test_sql_baseline_asks_for_tags(paper):
    prepared, _ = dataset.prepare("sql", paper)
    row = prepared.splits["test"][0]
    user = sql.TASK.baseline_messages(row, [], "default", {})[-1]["content"]
    assert row["context"] in user and row["question"] in user and "<SQL>" in user and "</SQL>" in user


def test_mathqa_from_the_mirror_without_train(paper):
    prepared, manifest = dataset.prepare("mathqa", paper)
    assert manifest["rows"] == {"train": 4475 + 2985, "validation": 604, "test": 0}
    assert any("lacks mathqa/train.json" in note for note in manifest["notes"])
    assert manifest["bad_rows_total"] == 0
    _disjoint(prepared)
    for rows in prepared.splits.values():
        for row in rows:
            assert row["completion"].endswith(f"\n#### {row['answer']}")
            assert f"{row['correct']}) {row['answer']}" in row["prompt"]
            assert not row["completion"].startswith('"')


def test_mathqa_reads_both_option_styles():
    plain = "a ) 38 , b ) 27.675 , c ) 1 , 200 , d ) 4 : 5 , e ) none of these"
    assert mathqa.parse_options(plain) == {"a": "38", "b": "27.675", "c": "1 , 200", "d": "4 : 5", "e": "none of these"}
    listed = "['a ) 2 : 3', 'b ) 4 π', 'c ) 16', 'd ) 8 π', 'e ) 16']"
    assert mathqa.parse_options(listed) == {"a": "2 : 3", "b": "4 π", "c": "16", "d": "8 π", "e": "16"}
    for broken in ("['a ) 1', __import__('os')]", "no options at all", "a ) 1 , a ) 2"):
        with pytest.raises(mathqa.BadRow):
            mathqa.parse_options(broken)


def test_demo_config_limits_are_seeded_and_recorded(tmp_path, with_mirror):
    out = [tmp_path / "one", tmp_path / "two"]
    for directory in out:
        assert cli.main(["data", "viggo", "--config", str(DEMO), "--out-dir", str(directory)]) == 0
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"):
        assert (out[0] / name).read_bytes() == (out[1] / name).read_bytes()
    manifest = json.loads((out[0] / "manifest.json").read_text())
    limit = yaml.safe_load(DEMO.read_text())["tasks"]["viggo"]["limit"]
    assert manifest["rows"] == limit
    assert manifest["rows_before_limit"] == {"train": 5096, "validation": 714, "test": 1083}  # 7 repeats left out
    assert manifest["limit"] == limit
    assert manifest["seed"] == 42
    test_rows = data.read_split(out[0], "test")
    assert len(test_rows) == limit["test"]
    # A different seed draws a different subset.
    assert cli.main(["data", "viggo", "--config", str(DEMO), "--seed", "1", "--out-dir", str(tmp_path / "three")]) == 0
    assert (tmp_path / "three" / "test.jsonl").read_bytes() != (out[0] / "test.jsonl").read_bytes()
