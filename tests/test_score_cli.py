"""The ``tunebench score`` contract: TASK FILE.jsonl [--per-example OUT.jsonl], run through the real CLI."""

from __future__ import annotations

import json

import pytest

from tunebench.commands import cli


@pytest.fixture
def tunebench(capsys):
    """Run ``tunebench ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def write_lines(path, rows, blank_after=None):
    with open(path, "w") as handle:
        for i, row in enumerate(rows):
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
            if blank_after == i:
                handle.write("\n")
    return path


GSM8K_ROWS = [
    {"id": "a", "prediction": "3 + 4 = 7\n#### 7", "answer": "7"},
    {"id": "b", "prediction": "The answer is 1,200.", "answer": 1200},
    {"id": "c", "prediction": "#### 12\nno wait, 13", "answer": "13"},
    {"id": "d", "prediction": "I don't know", "answer": "5", "extra": {"kept": True}},
]


def test_summary_and_per_example_follow_the_contract(tunebench, tmp_path):
    source = write_lines(tmp_path / "in.jsonl", GSM8K_ROWS, blank_after=1)
    out = tmp_path / "nested" / "verdicts.jsonl"
    code, stdout, stderr = tunebench("score", "gsm8k", source, "--per-example", out)
    assert code == 0, stderr
    assert stdout.count("\n") == 1
    summary = json.loads(stdout)
    assert list(summary) == ["task", "n", "metrics"]
    assert summary == {"task": "gsm8k", "n": 4, "metrics": {"strict_accuracy": 0.25, "flexible_accuracy": 0.75}}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a", "b", "c", "d"]
    for line, row in zip(lines, GSM8K_ROWS):
        assert {k: v for k, v in line.items() if k != "verdict"} == row
    assert [line["verdict"] for line in lines] == [
        {"strict_accuracy": True, "flexible_accuracy": True},
        {"strict_accuracy": False, "flexible_accuracy": True},
        {"strict_accuracy": False, "flexible_accuracy": True},
        {"strict_accuracy": False, "flexible_accuracy": False},
    ]


def test_every_task(tunebench, tmp_path):
    cases = {
        "viggo": [
            {"prediction": "inform(name[Halo], rating[good])", "answer": "inform(name[Halo], rating[good])"},
            {"prediction": "inform(rating[good], name[Halo])", "answer": "inform(name[Halo], rating[good])"},
        ],
        "multiplication": [
            {"prediction": "458 * 987 = 452,046", "answer": "452046"},
            {"prediction": "= 451,086", "answer": 452046},
        ],
    }
    expected = {
        "viggo": {
            "function_accuracy": 1.0,
            "attributes_accuracy": 1.0,
            "attributes_ordered_accuracy": 0.5,
            "exact_match": 0.5,
        },
        "multiplication": {"accuracy": 0.5},
    }
    for task, rows in cases.items():
        code, stdout, stderr = tunebench("score", task, write_lines(tmp_path / f"{task}.jsonl", rows))
        assert code == 0, stderr
        assert json.loads(stdout) == {"task": task, "n": 2, "metrics": expected[task]}


def test_sql_options_and_unscorable_rows(tunebench, tmp_path):
    context = "CREATE TABLE head (name VARCHAR, age INTEGER)"
    rows = [
        {
            "prediction": "<SQL>SELECT name FROM head WHERE age > 56</SQL>",
            "answer": "SELECT name FROM head WHERE age > 56",
            "context": context,
        },
        {
            "prediction": "SELECT name FROM head WHERE age >= 56",
            "answer": "SELECT name FROM head WHERE age > 56",
            "context": context,
        },
        {
            "prediction": "SELECT 1993",
            "answer": 'SELECT 1993 FROM t WHERE 1991 = "1r"',
            "context": "CREATE TABLE t (Id VARCHAR)",
        },
    ]
    source = write_lines(tmp_path / "sql.jsonl", rows)
    out = tmp_path / "sql-verdicts.jsonl"
    code, stdout, stderr = tunebench("score", "sql", source, "--per-example", out, "--databases", 2, "--timeout", 0.5)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["n"] == 3
    assert summary["metrics"] == {"execution_accuracy": 0.5, "exact_match": pytest.approx(1 / 3), "parse_rate": 1.0}
    assert "1 of 3 rows are unscorable for execution_accuracy" in stderr
    verdicts = [json.loads(line)["verdict"] for line in out.read_text().splitlines()]
    assert [v["execution_accuracy"] for v in verdicts] == [True, False, None]

    code, stdout, stderr = tunebench("score", "sql", source, "--executor", "sqlglot")
    assert code == 0, stderr
    assert json.loads(stdout)["metrics"]["execution_accuracy"] == 0.5


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prediction": "1", "answer": "1"}\nnot json\n', "line 2 is not valid JSON"),
        ('{"prediction": "1", "answer": "1"}\n\n["a list"]\n', "line 3 is a JSON list, not an object"),
        ('{"answer": "1"}\n', 'line 1 has no string "prediction"'),
        ('{"prediction": 5, "answer": "1"}\n', 'line 1 has no string "prediction"'),
        ('{"prediction": "5"}\n', 'line 1 has no "answer"'),
        ('{"prediction": "5", "answer": null}\n', 'line 1 has no "answer"'),
    ],
)
def test_malformed_lines_stop_with_the_line_number(tunebench, tmp_path, content, message):
    source = tmp_path / "bad.jsonl"
    source.write_text(content)
    out = tmp_path / "never.jsonl"
    code, stdout, stderr = tunebench("score", "gsm8k", source, "--per-example", out)
    assert code == 2 and stdout == ""
    assert message in stderr and stderr.startswith("tunebench score: error: ")
    assert stderr.count("\n") == 1
    assert not out.exists()


def test_user_errors(tunebench, tmp_path):
    code, _, stderr = tunebench("score", "gsm8k", tmp_path / "missing.jsonl")
    assert code == 2 and "does not exist" in stderr
    rows = write_lines(tmp_path / "rows.jsonl", [{"prediction": "1", "answer": "1"}])
    code, _, stderr = tunebench("score", "gsm8k", rows, "--databases", 2)
    assert code == 2 and "apply to the sql task only" in stderr
    code, _, stderr = tunebench("score", "sql", rows)
    assert code == 2 and 'line 1 has no string "context"' in stderr
    code, _, stderr = tunebench("score", "sql", rows, "--timeout", 0)
    assert code == 2 and "--timeout is 0.0 but must be greater than 0" in stderr
    code, _, stderr = tunebench("score", "gsm8k", rows, "--per-example", rows)
    assert code == 2 and "is the input file" in stderr
    assert rows.read_text().count("\n") == 1
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prediction": "\xe9", "answer": "1"}\n')
    code, _, stderr = tunebench("score", "gsm8k", tmp_path / "latin1.jsonl")
    assert code == 2 and "not UTF-8" in stderr
    code, _, stderr = tunebench("score", "mathqa", rows)  # built in, but without a scorer
    assert code == 2 and "unknown task 'mathqa'; name one of viggo, sql, gsm8k, multiplication or declare" in stderr


def test_empty_file_scores_nothing(tunebench, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    code, stdout, _ = tunebench("score", "multiplication", tmp_path / "empty.jsonl")
    assert code == 0
    assert json.loads(stdout) == {"task": "multiplication", "n": 0, "metrics": {"accuracy": None}}


def test_lone_surrogates_survive_the_round_trip(tunebench, tmp_path):
    source = tmp_path / "odd.jsonl"
    source.write_text('{"prediction": "\\ud800 #### 4", "answer": "4"}\n')
    out = tmp_path / "odd-verdicts.jsonl"
    code, stdout, stderr = tunebench("score", "gsm8k", source, "--per-example", out)
    assert code == 0, stderr
    line = json.loads(out.read_text())
    assert line["prediction"] == "\ud800 #### 4" and line["verdict"]["strict_accuracy"] is True


def test_an_integer_over_the_digit_limit_stops_with_the_line_number(tunebench, tmp_path):
    source = tmp_path / "huge.jsonl"
    source.write_text('{"prediction": "1", "answer": "1"}\n{"prediction": "1", "answer": ' + "7" * 5000 + "}\n")
    code, stdout, stderr = tunebench("score", "gsm8k", source)
    assert code == 2 and stdout == ""
    assert "line 2 holds an integer too long to read" in stderr and stderr.count("\n") == 1


@pytest.mark.parametrize("task", ["gsm8k", "multiplication", "viggo", "sql"])
@pytest.mark.parametrize("gold", ["Infinity", "-Infinity", "NaN", "1e400", "-1e400"])
def test_non_finite_golds_are_unscorable(tunebench, tmp_path, task, gold):
    """JSON's Infinity/NaN and a float that overflows (1e400) are no answer: the row is unscorable."""
    source = tmp_path / "golds.jsonl"
    context = ', "context": "CREATE TABLE t (a INT)"' if task == "sql" else ""
    source.write_text(
        '{"prediction": "#### 5", "answer": ' + gold + context + "}\n"
        '{"prediction": "#### 5", "answer": "5"' + context + "}\n"
    )
    code, stdout, stderr = tunebench("score", task, source)
    assert code == 0, stderr
    assert json.loads(stdout)["n"] == 2
    assert "of 2 rows are unscorable" in stderr
    if task in ("gsm8k", "multiplication"):  # the numeric gold of the second row still scores
        assert "1 of 2 rows are unscorable" in stderr
