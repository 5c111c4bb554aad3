"""SQL scorer: extraction, the read-only gate, the sandbox, test-suite synthesis and the acceptance
numbers on the mirror's sql-create-context sample (gold against itself, scorable share, mutations)."""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter

import pytest
from sqlglot import exp

from tunebench.tasks.scoring import sql, sqlsuite

HEAD = "CREATE TABLE head (name VARCHAR, born_state VARCHAR, age INTEGER)"


def gold(answer: str, context: str = HEAD) -> dict:
    return {"answer": answer, "context": context}


# ----------------------------------------------------------------- extraction and gate


@pytest.mark.parametrize(
    "prediction, query",
    [
        ("<SQL>SELECT 1;</SQL> I hope this helps!", "SELECT 1"),
        ("Sure! <sql>\nSELECT a FROM t\n</sql>", "SELECT a FROM t"),
        ("<SQL>SELECT a FROM t", "SELECT a FROM t"),  # generation stopped before the closing tag
        ("<SQL>```sql\nSELECT 2\n```</SQL>", "SELECT 2"),
        ("Here you go:\n```sql\nSELECT b FROM t;\n```\nDone.", "SELECT b FROM t"),
        ("```SELECT c FROM t```", "SELECT c FROM t"),
        ("  SELECT d FROM t ;; ", "SELECT d FROM t"),
        ("\u0130\u0130 <SQL>SELECT e FROM t</SQL>", "SELECT e FROM t"),  # lower() would change the length
        ("   ", None),
    ],
)
def test_extract(prediction, query):
    assert sql.extract(prediction) == query


@pytest.mark.parametrize(
    "query",
    [
        "SELECT name FROM head WHERE age > 56",
        "WITH old AS (SELECT * FROM head WHERE age > 60) SELECT name FROM old",
        "SELECT name FROM head UNION SELECT born_state FROM head",
        "SELECT name FROM head WHERE age IN (SELECT MAX(age) FROM head)",
    ],
)
def test_gate_accepts_read_only_queries(query):
    assert sqlsuite.parse_query(query) is not None


@pytest.mark.parametrize(
    "query",
    [
        "DROP TABLE head",
        "SELECT 1; DROP TABLE head",
        "SELECT 1; SELECT 2",
        "ATTACH DATABASE 'x.db' AS x",
        "DETACH x",
        "PRAGMA writable_schema = 1",
        "INSERT INTO head VALUES ('a', 'b', 1)",
        "UPDATE head SET age = 1",
        "DELETE FROM head",
        "CREATE TABLE x (a)",
        "VACUUM INTO 'copy.db'",
        "REPLACE INTO head VALUES ('a', 'b', 1)",
        "BEGIN",
        "SELECT (((1",
        "SELECT 'x" + "y" * 20_000 + "'",
        "SELECT 1\x00",
        "",
        None,
    ],
)
def test_gate_refuses_everything_else(query):
    assert sqlsuite.parse_query(query) is None
    assert sql.score(query or "", gold("SELECT name FROM head WHERE age > 56"))["parse_rate"] is False


# ----------------------------------------------------------------- sandbox


@pytest.fixture(scope="module")
def head_suite():
    suite = sqlsuite.build_suite(HEAD, 'SELECT name FROM head WHERE born_state = "California" AND age > 56')
    assert suite is not None and len(suite.databases) == 3
    return suite


@pytest.mark.parametrize(
    "query, reason",
    [
        ("ATTACH DATABASE 'pwned.db' AS p", "not authorized"),
        ("INSERT INTO head VALUES ('a', 'b', 1)", "not authorized"),
        ("CREATE TEMP TABLE x (a)", "not authorized"),
        ("PRAGMA table_info(head)", "not authorized"),
        ("VACUUM INTO 'copy.db'", "authorization denied"),
        ("SELECT random()", "not authorized to use function: random"),
        ("SELECT load_extension('/tmp/x')", "not authorized"),
        ("SELECT 1; SELECT 2", "one statement at a time"),
        ("SELECT randomblob(100)", "not authorized"),
        ("SELECT zeroblob(100000000)", "not authorized"),
        ("SELECT printf('%.*c', 1000000000, 'x')", "not authorized"),
        (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 20000) SELECT group_concat('ab', "
            "'') FROM c",
            "too big",
        ),
        ("SELECT * FROM head a, head b, head c, head d", "more than 1000 result rows"),
    ],
)
def test_sandbox_refuses_even_without_the_gate(head_suite, query, reason, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(sqlsuite.QueryFailed, match=reason):
        sqlsuite.run_sqlite(head_suite.databases[0], query, timeout_s=1.0)
    assert list(tmp_path.iterdir()) == []


def test_sandbox_stops_a_query_that_never_ends(head_suite):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    start = time.monotonic()
    with pytest.raises(sqlsuite.QueryFailed, match="interrupted"):
        sqlsuite.run_sqlite(head_suite.databases[0], endless, timeout_s=0.2)
    assert time.monotonic() - start < 1.0
    verdict = sql.score(endless, gold(head_suite.gold), sql_timeout_s=0.2)
    assert verdict == {"execution_accuracy": False, "exact_match": False, "parse_rate": True}


def test_context_may_only_define_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlsuite.load_schema(HEAD)[0].columns == (("name", "VARCHAR"), ("born_state", "VARCHAR"), ("age", "INTEGER"))
    for context in (
        HEAD + "; ATTACH DATABASE 'ctx.db' AS c",
        HEAD + "; DROP TABLE head",
        HEAD + "; INSERT INTO head VALUES ('a', 'b', 1)",
        "CREATE VIEW v AS SELECT 1",
        "CREATE TEMP TABLE t (a)",
        "",
        "not sql at all",
    ):
        assert sqlsuite.load_schema(context) is None
        assert sql.score("SELECT 1", gold("SELECT 1", context))["execution_accuracy"] is None
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- semantics


def test_double_quoted_literals_are_strings_unless_a_column_has_that_name(head_suite):
    answer = head_suite.gold
    assert sql.score("SELECT name FROM head WHERE born_state = 'California' AND age > 56", gold(answer))[
        "execution_accuracy"
    ]
    # "born_state" names a column, so this compares the column with itself: true on every row.
    assert not sql.score('SELECT name FROM head WHERE "born_state" = "born_state" AND age > 56', gold(answer))[
        "execution_accuracy"
    ]
    tables = sqlsuite.load_schema(HEAD)
    tree = sqlsuite.parse_query(answer)
    resolver = sqlsuite._Resolver(tree, tables)
    strings = [node.name for node in tree.find_all(exp.Column) if resolver.is_string(node)]
    assert strings == ["California"]


def test_suite_puts_values_on_and_beside_every_literal(head_suite):
    ages = {row[2] for database in head_suite.databases for row in database.rows[0]}
    states = {row[1] for database in head_suite.databases for row in database.rows[0]}
    assert {55, 56, 57} <= ages
    assert "California" in states and len(states - {"California", None}) >= 1
    for rows in head_suite.results:
        assert rows  # informative: never empty


@pytest.mark.parametrize(
    "prediction, correct",
    [
        ("SELECT name FROM head WHERE age > 56 AND born_state = 'California'", True),
        ("SELECT head.name FROM head AS head WHERE head.age >= 57 AND head.born_state = 'California'", True),
        ("SELECT name FROM head WHERE born_state = 'California' AND age >= 56", False),  # boundary
        ("SELECT name FROM head WHERE born_state = 'California'", False),  # dropped condition
        ("SELECT name FROM head WHERE age > 56", False),  # the other dropped condition
        ("SELECT name FROM head WHERE born_state = 'California' OR age > 56", False),
        ("SELECT born_state FROM head WHERE born_state = 'California' AND age > 56", False),
        ("SELECT name FROM head WHERE born_state = 'california' AND age > 56", False),  # text compares exactly
        ("SELECT DISTINCT name FROM head WHERE born_state = 'California' AND age > 56", None),  # depends on duplicates
    ],
)
def test_near_misses(head_suite, prediction, correct):
    verdict = sql.score(prediction, gold(head_suite.gold))["execution_accuracy"]
    if correct is None:  # DISTINCT is right only if no suite database repeats a name among the matches
        names = [Counter(row[0] for row in rows) for rows in head_suite.results]
        assert verdict == all(max(count.values()) == 1 for count in names)
    else:
        assert verdict is correct


def test_order_matters_only_when_the_gold_orders():
    ordered = gold("SELECT name, age FROM head WHERE age > 30 ORDER BY age")
    assert sql.score("SELECT name, age FROM head WHERE age > 30 ORDER BY age", ordered)["execution_accuracy"] is True
    assert (
        sql.score("SELECT name, age FROM head WHERE age > 30 ORDER BY age DESC", ordered)["execution_accuracy"] is False
    )
    unordered = gold("SELECT name, age FROM head WHERE age > 30")
    assert (
        sql.score("SELECT name, age FROM head WHERE age > 30 ORDER BY age DESC", unordered)["execution_accuracy"]
        is True
    )
    assert sql.score("SELECT age, name FROM head WHERE age > 30", unordered)["execution_accuracy"] is False


def test_numbers_compare_numerically_and_text_stays_text():
    assert sqlsuite.same_result([(3,)], [(3.0,)], ordered=False)
    assert sqlsuite.same_result([(0.1 + 0.2,)], [(0.3,)], ordered=False)
    assert not sqlsuite.same_result([(3,)], [("3",)], ordered=False)
    assert not sqlsuite.same_result([(1,), (1,)], [(1,)], ordered=False)  # multisets, not sets
    count = gold("SELECT COUNT(*) FROM head WHERE age > 56")
    assert (
        sql.score("SELECT SUM(CASE WHEN age > 56 THEN 1.0 ELSE 0 END) FROM head", count)["execution_accuracy"] is True
    )


def test_exact_match_normalises_case_spacing_quotes_and_semicolons():
    answer = gold('SELECT name FROM head WHERE born_state = "California"')
    assert sql.score("select  name\nfrom HEAD where born_state = 'California';", answer)["exact_match"] is True
    assert sql.score("SELECT name FROM head WHERE born_state = 'california'", answer)["exact_match"] is False


def test_unscorable_examples_are_none_not_false():
    # The dataset's parse artefacts: a placeholder schema, a thousands separator read as OFFSET,
    # a tautology.
    for context, answer in [
        ("CREATE TABLE table_name_75 (Id VARCHAR)", 'SELECT 1993 FROM table_name_75 WHERE 1991 = "1r"'),
        ("CREATE TABLE t (away_team VARCHAR, crowd INTEGER)", "SELECT away_team FROM t WHERE crowd > 41 OFFSET 402"),
        # Two equal strings: true on every row, so the result is always the whole table.
        ("CREATE TABLE t (valvetrain VARCHAR)", 'SELECT valvetrain FROM t WHERE "engine_model" = "engine_model"'),
    ]:
        assert sqlsuite.build_suite(context, answer) is None
        verdict = sql.score(answer, gold(answer, context))
        assert verdict["execution_accuracy"] is None and verdict["parse_rate"] is not None


def test_suites_are_deterministic_and_seeded_by_content():
    answer = "SELECT COUNT(*) FROM head WHERE age < 40 AND born_state = 'Ohio'"
    first = sqlsuite.build_suite(HEAD, answer, 3, 2.0)
    sqlsuite.build_suite.cache_clear()
    again = sqlsuite.build_suite(HEAD, answer, 3, 2.0)
    assert first == again and first is not again
    other = sqlsuite.build_suite(HEAD, answer.replace("40", "41"), 3, 2.0)
    assert other.databases != first.databases
    five = sqlsuite.build_suite(HEAD, answer, 5, 2.0)
    assert len(five.databases) == 5


def test_unknown_executor_is_refused():
    with pytest.raises(ValueError, match="unknown SQL executor"):
        sql.score("SELECT 1", gold("SELECT 1"), sql_executor="postgres")


# ----------------------------------------------------------------- the mirror sample


@pytest.fixture(scope="module")
def sample(mirror):
    with open(mirror / "sql-create-context" / "sample.jsonl") as handle:
        return [json.loads(line) for line in handle]


FLIPS = {exp.GT: exp.GTE, exp.GTE: exp.GT, exp.LT: exp.LTE, exp.LTE: exp.LT, exp.EQ: exp.NEQ, exp.NEQ: exp.EQ}


def mutations(answer: str, context: str) -> list[tuple[str, str]]:
    """Wrong versions of a gold query: another column, another literal, each condition dropped,
    the first AND made OR, the first comparison flipped (> and >=, < and <=, = and !=)."""
    tree = sqlsuite.parse_query(answer)
    tables = sqlsuite.load_schema(context)
    columns = {t.name.lower(): [c for c, _ in t.columns] for t in tables}
    known = {c.lower() for names in columns.values() for c in names}

    def is_column(node):
        return isinstance(node, exp.Column) and node.name.lower() in known

    def is_literal(node):
        if isinstance(node, exp.Literal):
            return True
        return isinstance(node, exp.Column) and node.this.quoted and not node.table and node.name.lower() not in known

    out = []
    mutant = tree.copy()
    targets = [
        c for s in mutant.selects for c in s.find_all(exp.Column) if is_column(c) and not c.find_ancestor(exp.Count)
    ]
    if not targets and mutant.args.get("where"):
        targets = [c for c in mutant.args["where"].find_all(exp.Column) if is_column(c)]
    if targets:
        target = targets[0]
        for names in columns.values():
            if any(n.lower() == target.name.lower() for n in names):
                others = [n for n in names if n.lower() != target.name.lower()]
                if others:
                    target.set("this", exp.to_identifier(others[0]))
                    out.append(("another column", mutant.sql(dialect="sqlite")))
                break
    if tree.args.get("where") is None:
        return out
    mutant = tree.copy()
    literals = [n for n in mutant.args["where"].walk() if is_literal(n)]
    if literals:
        literal = literals[0]
        if isinstance(literal, exp.Literal) and not literal.is_string:
            value = float(literal.this)
            literal.replace(exp.Literal.number(int(value) + 1 if value.is_integer() else value + 0.5))
        else:
            literal.replace(exp.Literal.string(literal.name + "z"))
        out.append(("another literal", mutant.sql(dialect="sqlite")))
    condition = tree.args["where"].this
    parts = list(condition.flatten()) if isinstance(condition, exp.And) else [condition]
    if len(parts) == 1:
        mutant = tree.copy()
        mutant.set("where", None)
        out.append(("dropped condition", mutant.sql(dialect="sqlite")))
    else:
        for k in range(len(parts)):
            mutant = tree.copy()
            rest = list(mutant.args["where"].this.flatten())
            del rest[k]
            mutant.set("where", exp.Where(this=exp.and_(*rest)))
            out.append(("dropped condition", mutant.sql(dialect="sqlite")))
    mutant = tree.copy()
    ands = list(mutant.args["where"].find_all(exp.And))
    if ands:
        ands[0].replace(exp.Or(this=ands[0].this.copy(), expression=ands[0].expression.copy()))
        out.append(("AND to OR", mutant.sql(dialect="sqlite")))
    mutant = tree.copy()
    comparisons = [n for n in mutant.args["where"].walk() if type(n) in FLIPS]
    if comparisons:
        node = comparisons[0]
        node.replace(FLIPS[type(node)](this=node.this.copy(), expression=node.expression.copy()))
        out.append(("flipped comparison", mutant.sql(dialect="sqlite")))
    return out


@pytest.mark.slow
def test_acceptance_on_the_mirror_sample(sample):
    assert len(sample) == 2410
    start = time.monotonic()
    verdicts = [sql.score(row["answer"], row)["execution_accuracy"] for row in sample]
    self_seconds = time.monotonic() - start
    scorable = [row for row, verdict in zip(sample, verdicts) if verdict is not None]
    assert all(verdict is True for verdict in verdicts if verdict is not None)
    share = len(scorable) / len(sample)
    print(
        f"\ngold against itself: {len(scorable)} of {len(sample)} scorable ({share:.1%}), all correct, "
        f"{self_seconds:.1f} s"
    )
    assert share >= 0.90

    start = time.monotonic()
    made, caught = Counter(), Counter()
    for row in scorable:
        for kind, mutant in mutations(row["answer"], row["context"]):
            made[kind] += 1
            caught[kind] += sql.score(mutant, row)["execution_accuracy"] is False
    for kind in made:
        print(f"{kind}: {caught[kind]} of {made[kind]} scored wrong ({caught[kind] / made[kind]:.1%})")
    total = sum(caught.values()) / sum(made.values())
    print(
        f"all mutations: {sum(caught.values())} of {sum(made.values())} ({total:.1%}), {time.monotonic() - start:.1f} s"
    )
    assert set(made) == {"another column", "another literal", "dropped condition", "AND to OR", "flipped comparison"}
    assert min(made.values()) >= 500
    assert total >= 0.95
    assert all(caught[kind] / made[kind] >= 0.95 for kind in made)


def test_sqlglot_executor_replays_the_study(sample):
    # The study lower-cased the model's SQL before running it in sqlglot's executor, so a correct
    # query is wrong whenever a literal has capitals; lower-case golds survive the replay.
    lower = [
        row for row in sample[200:] if all(q == q.lower() for q in re.findall(r"\"[^\"]*\"|'[^']*'", row["answer"]))
    ][:40]
    verdicts = [sql.score(row["answer"], row, sql_executor="sqlglot")["execution_accuracy"] for row in lower]
    assert all(verdict in (True, None) for verdict in verdicts)
    assert sum(verdict is True for verdict in verdicts) >= 30
    row = lower[0]
    wrong = mutations(row["answer"], row["context"])[0][1]
    assert sql.score(wrong, row, sql_executor="sqlglot")["execution_accuracy"] is False
    capital = gold("SELECT name FROM head WHERE born_state = 'California' AND age > 56")
    assert sql.score(capital["answer"], capital, sql_executor="sqlglot")["execution_accuracy"] is False
    assert sql.score(capital["answer"], capital)["execution_accuracy"] is True


def test_no_temporary_files_even_for_big_sorts(head_suite, tmp_path, monkeypatch):
    # temp_store = MEMORY: SQLite would otherwise spill large sorts to SQLITE_TMPDIR.
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_path))
    big_sort = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) "
        "SELECT x FROM c ORDER BY -x LIMIT 3"
    )
    assert sqlsuite.run_sqlite(head_suite.databases[0], big_sort, timeout_s=5.0) == [(200000,), (199999,), (199998,)]
    assert os.listdir(tmp_path) == []
