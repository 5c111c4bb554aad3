"""Hostile model outputs: every scorer must return a wrong verdict, quickly, without raising and
without touching a file, for at least 1,000 outputs each (random bytes, megabyte strings, SQL
attacks, stacked statements, endless recursive CTEs, unbalanced brackets)."""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time

import pytest

from tunebench.tasks.scoring import gsm8k, multiplication, sql, sqlsuite, viggo

SQL_TIMEOUT_S = 0.25
SQL_DATABASES = 3
MEGABYTE = 1 << 20

GOLDS = {
    "viggo": {
        "answer": "give_opinion(name[Tom Clancy's The Division], esrb[M (for Mature)], rating[average], "
        "genres[role-playing, shooter])"
    },
    "gsm8k": {"answer": "987654321"},
    "multiplication": {"answer": "98765432123", "a": 1234567, "b": 80003659},
    "sql": {
        "answer": 'SELECT name FROM head WHERE born_state = "California" AND age > 56',
        "context": "CREATE TABLE head (name VARCHAR, born_state VARCHAR, age INTEGER)",
    },
}
RIGHT = {
    "viggo": GOLDS["viggo"]["answer"],
    "gsm8k": "#### 987654321",
    "multiplication": "98,765,432,123",
    "sql": "<SQL>SELECT name FROM head WHERE born_state = 'California' AND age > 56</SQL>",
}
SCORERS = {"viggo": viggo, "gsm8k": gsm8k, "multiplication": multiplication, "sql": sql}
OPTIONS = {"sql": {"sql_databases": SQL_DATABASES, "sql_timeout_s": SQL_TIMEOUT_S}}
# Every query is stopped at the timeout on the first database where it misbehaves; a query that is
# merely slow may use the timeout once per database. The rest is slack for a busy machine.
LIMIT_S = {"sql": SQL_DATABASES * SQL_TIMEOUT_S + 1.5, "viggo": 1.5, "gsm8k": 1.5, "multiplication": 1.5}

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
SQL_ATTACKS = [
    "DROP TABLE head",
    "<SQL>DROP TABLE head</SQL>",
    "SELECT name FROM head; DROP TABLE head",
    "SELECT name FROM head;\nDELETE FROM head",
    "'; DROP TABLE head; --",
    "ATTACH DATABASE 'fuzz.db' AS f",
    "SELECT 1; ATTACH DATABASE 'fuzz.db' AS f",
    "PRAGMA writable_schema = ON",
    "PRAGMA temp_store_directory = '.'",
    "SELECT name FROM head; PRAGMA journal_mode = WAL",
    "VACUUM INTO 'fuzz.db'",
    "INSERT INTO head VALUES ('x', 'California', 99)",
    "UPDATE head SET age = 99",
    "CREATE TABLE fuzz (a)",
    "BEGIN; SELECT name FROM head; COMMIT",
    "REPLACE INTO head VALUES ('x', 'y', 1)",
    f"{ENDLESS} SELECT COUNT(*) FROM c",
    f"{ENDLESS} SELECT MAX(x) FROM c",
    f"{ENDLESS} SELECT name FROM head, c WHERE x < 0",
    f"{ENDLESS} SELECT x FROM c ORDER BY x DESC LIMIT 1",
    f"```sql\n{ENDLESS} SELECT SUM(x) FROM c\n```",
    f"<SQL>{ENDLESS} SELECT group_concat(x) FROM c</SQL>",
    "SELECT randomblob(1000000000)",
    "SELECT zeroblob(2000000000)",
    "SELECT printf('%.*c', 1000000000, 'x')",
    "SELECT replace(hex(zeroblob(400000)), '0', hex(zeroblob(400000)))",
    "SELECT load_extension('fuzz')",
    "SELECT readfile('/etc/passwd')",
    "SELECT writefile('fuzz.txt', 'x')",
    "SELECT * FROM sqlite_master",
    f"SELECT instr(({ENDLESS} SELECT group_concat('a', '') FROM c LIMIT 1), 'b')",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 9999) "
    "SELECT (SELECT group_concat('a', '') FROM c) LIKE '%' || replace((SELECT group_concat('a', '') FROM c LIMIT "
    "400), 'a', 'a%') || 'b'",
    "SELECT name FROM head WHERE random() > 0",
    "SELECT * FROM head a, head b, head c, head d, head e, head f",
    "SELECT name FROM head WHERE " + " OR ".join(["(age > 1"] * 3000),
    "SELECT " + "(" * 50_000 + "1",
    "SELECT " + "(SELECT " * 300 + "1" + ")" * 300,
    "SELECT name FROM head WHERE born_state = 'California' AND age > 56 /*",
    'SELECT name FROM head WHERE born_state = "California',
    "<SQL>" * 200_000,
    "```" * 300_000,
]


def _random_text(rng: random.Random) -> str:
    raw = rng.randbytes(rng.randint(0, 3000))
    codec = rng.choice(["latin-1", "utf-8-replace", "utf-8-surrogateescape", "utf-16-replace"])
    if codec == "latin-1":
        return raw.decode("latin-1")
    name, errors = codec.rsplit("-", 1)
    return raw.decode(name, errors=errors)


_SOUP = [
    "SELECT",
    "FROM",
    "WHERE",
    "head",
    "name",
    "age",
    "(",
    ")",
    ",",
    "'",
    '"',
    ";",
    "DROP",
    "ATTACH",
    "PRAGMA",
    "UNION",
    "WITH",
    "RECURSIVE",
    "*",
    "=",
    ">",
    "1",
    "0x",
    "--",
    "/*",
    "*/",
    "<SQL>",
    "</SQL>",
    "```",
    "[",
    "]",
    "inform(",
    "name[",
    "####",
    "-",
    "$",
    ",000",
    "\n",
    "\x00",
    "\ud800",
    "NULL",
    "AS",
    "c",
    "x",
    "ORDER BY",
]


def _soup(rng: random.Random) -> str:
    return rng.choice(["", " "]).join(rng.choice(_SOUP) for _ in range(rng.randint(1, 80)))


def _megabytes() -> list[str]:
    return [
        "9" * MEGABYTE,
        "1," * (MEGABYTE // 2),
        "1" + ",000" * (MEGABYTE // 4),
        "-" * MEGABYTE,
        "#### " * (MEGABYTE // 5),
        "a(b[" * (MEGABYTE // 4),
        "inform(" * (MEGABYTE // 7),
        "inform(name[" + "x" * MEGABYTE,
        "inform(name[Halo]" + ", rating[good]" * (MEGABYTE // 14),
        "(" * MEGABYTE,
        "[" * MEGABYTE + "]" * MEGABYTE,
        "SELECT " * (MEGABYTE // 7),
        "\x00" * MEGABYTE,
        "\u00e9" * MEGABYTE,
    ]


@pytest.fixture(scope="module")
def hostile() -> list[str]:
    rng = random.Random(20240611)
    outputs = list(SQL_ATTACKS) + _megabytes()
    outputs += [_random_text(rng) for _ in range(500)]
    outputs += [_soup(rng) for _ in range(500)]
    outputs += ["#### " + "9" * rng.randint(41, 5000) for _ in range(10)]
    outputs += ["give_opinion(" + "name[" * rng.randint(1, 50) + "]" * rng.randint(0, 50) + ")" for _ in range(10)]
    assert len(outputs) >= 1000
    return outputs


class FileWatch:
    """Records, through an audit hook, anything that writes files, opens a database file or starts a process."""

    WRITE_EVENTS = {
        "os.remove",
        "os.rename",
        "os.mkdir",
        "os.rmdir",
        "os.truncate",
        "os.link",
        "os.symlink",
        "os.chmod",
        "shutil.rmtree",
        "shutil.move",
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "socket.connect",
    }

    def __init__(self):
        self.active = False
        self.events: list[tuple] = []
        sys.addaudithook(self._hook)  # hooks cannot be removed; this one records only while active

    def _hook(self, event, args):
        if not self.active:
            return
        if event == "open":
            path, mode = args[0], args[1]
            if isinstance(mode, str) and any(flag in mode for flag in "wax+"):
                self.events.append((event, path, mode))
            elif isinstance(mode, int) or mode is None:  # os.open: flags are in args[2]
                flags = args[2] if len(args) > 2 else 0
                if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                    self.events.append((event, path, flags))
        elif event == "sqlite3.connect" and args and args[0] != ":memory:":
            self.events.append((event, args[0]))
        elif event in self.WRITE_EVENTS:
            self.events.append((event, args))


WATCH = FileWatch()


def _listing(*roots) -> set[str]:
    return {os.path.join(d, f) for root in roots for d, dirs, files in os.walk(root) for f in files + dirs}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["viggo", "gsm8k", "multiplication", "sql"])
def test_hostile_outputs_are_wrong_fast_and_harmless(task, hostile, tmp_path, monkeypatch):
    scorer, gold, options = SCORERS[task], GOLDS[task], OPTIONS.get(task, {})
    assert all(scorer.score(RIGHT[task], gold, **options).values())  # the gold is reachable
    workdir, tmpdir = tmp_path / "cwd", tmp_path / "tmp"
    workdir.mkdir()
    tmpdir.mkdir()
    monkeypatch.chdir(workdir)
    for variable in ("TMPDIR", "SQLITE_TMPDIR"):
        monkeypatch.setenv(variable, str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    before = _listing(workdir, tmpdir)
    slowest = 0.0
    WATCH.active = True
    try:
        for text in hostile:
            start = time.perf_counter()
            verdict = scorer.score(text, gold, **options)
            elapsed = time.perf_counter() - start
            slowest = max(slowest, elapsed)
            assert elapsed < LIMIT_S[task], f"{task} took {elapsed:.2f} s on {text[:60]!r}"
            correctness = [m for m in scorer.METRICS if m != "parse_rate"]
            assert all(verdict[m] is False for m in correctness), (text[:80], verdict)
            scorer.extract(text)
    finally:
        WATCH.active = False
    assert WATCH.events == []
    assert _listing(workdir, tmpdir) == before
    print(f"\n{task}: {len(hostile)} hostile outputs, slowest {slowest:.3f} s")


def test_the_file_watch_sees_writes(tmp_path):
    WATCH.active = True
    try:
        (tmp_path / "probe.txt").write_text("x")
    finally:
        WATCH.active = False
    events, WATCH.events = WATCH.events, []
    assert events and events[0][0] == "open"


def test_write_statements_never_count_as_parsed():
    for text in SQL_ATTACKS[:16]:
        assert sql.score(text, GOLDS["sql"], **OPTIONS["sql"])["parse_rate"] is False, text
        assert sqlsuite.parse_query(sql.extract(text)) is None


@pytest.mark.parametrize("task", ["viggo", "gsm8k", "multiplication", "sql"])
@pytest.mark.parametrize(
    "answer",
    [float("inf"), float("-inf"), float("nan"), 10**400, "1e400", "Infinity"],
    ids=["inf", "-inf", "nan", "int400", "str1e400", "strInfinity"],
)
def test_hostile_golds_are_unscorable_not_a_crash(task, answer):
    """A gold that is no finite number (JSON's Infinity, 1e400 read as a float, a 400-digit integer)
    gives ``None`` verdicts, whatever the prediction."""
    scorer, options = SCORERS[task], OPTIONS.get(task, {})
    gold = dict(GOLDS[task], answer=answer)
    gold.pop("a", None), gold.pop("b", None)
    for prediction in (RIGHT[task], "inf", "#### Infinity", str(10**400)):
        verdict = scorer.score(prediction, gold, **options)
        assert set(verdict) == set(scorer.METRICS)
        correctness = [m for m in scorer.METRICS if m != "parse_rate"]  # parse_rate judges the prediction alone
        assert all(verdict[m] is None or verdict[m] is False for m in correctness), (answer, prediction, verdict)
    if task in ("gsm8k", "multiplication") and not isinstance(answer, str):
        assert all(value is None for value in scorer.score(RIGHT[task], gold, **options).values())
