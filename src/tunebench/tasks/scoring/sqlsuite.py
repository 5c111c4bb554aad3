"""Test-suite execution accuracy: synthesised databases and a sandboxed SQLite runner.

A predicted query is right when it returns what the gold query returns on every database of a
small suite built for that example. The suite is synthesised deterministically (seeded from the
CREATE TABLE context and the gold query) so that it separates the gold from its near misses:

* every column the gold compares with a literal gets values on the literal and beside it
  (``n - 1``, ``n``, ``n + 1`` and values that stay on the same side when compared as text, for
  numbers; the string, a different string and its numeric neighbours, for text; strings that match a
  LIKE pattern), so ``>`` against ``>=``, another literal or a dropped condition shows;
* columns the gold compares with each other (join keys, ``IN (SELECT ...)``) share a small pool of
  values so joins find partners and ``NOT IN`` finds gaps;
* other cells get column-specific filler and, sparingly, NULL.

A database is kept only when the gold's result on it is informative: not empty (nor a single row of
NULL/0, what an aggregate returns over no rows) and, when the gold filters with WHERE, different from
the unfiltered result ("the whole table"). Among the informative draws, the kept ones are those that
also tell the gold apart from its nearest misses (one WHERE condition dropped, one comparison's
boundary moved). Examples for which ``databases`` informative databases cannot be found within a
fixed number of attempts are unscorable.

Double-quoted literals are read as SQLite reads them: a column if the schema has one of that name,
otherwise a string. Results compare as multisets of rows (as lists when the gold has a top-level
ORDER BY). Values compare by type and value, except that integers and floats compare numerically
(``AVG`` may return ``3.0`` where ``SUM`` returns ``3``); text is never coerced to a number, which is
also how SQLite itself treats the dataset's VARCHAR-declared numeric columns.

Model SQL is untrusted. Before execution it must parse (sqlglot, SQLite dialect) as exactly one
read-only query (SELECT, set operations, WITH); then it runs in a fresh in-memory database whose
authorizer allows only reads and an allow-list of deterministic core functions, with SQLite's size
limits lowered, a progress handler enforcing the time limit and a cap on result rows.
"""

from __future__ import annotations

import hashlib
import logging
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.executor import execute as sqlglot_execute

#: Longest query text that is parsed and run at all; the dataset's longest gold is under 400 characters.
MAX_SQL_CHARS = 10_000
#: Longest CREATE TABLE context that is read; the sample's longest is under 300 characters.
MAX_CONTEXT_CHARS = 10 * MAX_SQL_CHARS
#: Result rows beyond this make a query wrong (a cross join of the suite's tables, a runaway CTE).
MAX_RESULT_ROWS = 1_000
#: Candidate databases generated per database kept before an example is declared unscorable.
ATTEMPTS_PER_DATABASE = 16
#: Rows per synthesised table: enough to hold matching and non-matching rows, small enough to be fast.
ROWS_PER_TABLE = (5, 9)

EXECUTORS = ("sqlite", "sqlglot")

_LIMITS = {  # SQLite's defaults are sized for applications; a scoring sandbox needs far less.
    # Longest string or blob. Some functions (instr, replace, LIKE) run in one step whose cost grows
    # with the product of their arguments' lengths; the progress handler cannot stop them midway.
    sqlite3.SQLITE_LIMIT_LENGTH: 10_000,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 2 * MAX_SQL_CHARS,
    sqlite3.SQLITE_LIMIT_COLUMN: 200,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 200,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 20,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 20,
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 1_000,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 0,
    sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0,
}
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE}
# Functions a query may call: the aggregates and the deterministic text, number and date functions
# of core SQLite. Left out on purpose: random/randomblob (verdicts would depend on luck), printf/format
# (a width of 10**9 loops inside one step, out of the progress handler's reach), zeroblob,
# load_extension and the internal sqlite_* and fts3 functions.
_ALLOWED_FUNCTIONS = frozenset(
    """count sum total avg min max group_concat abs round length lower upper substr substring trim ltrim
    rtrim replace instr coalesce ifnull nullif iif typeof like glob date time datetime julianday strftime
    unixepoch char unicode hex quote likely unlikely likelihood""".split()
)
# Statements a read-only query must not contain anywhere in its tree.
_WRITE_NODES = (
    exp.DDL,
    exp.DML,
    exp.Command,
    exp.Pragma,
    exp.Attach,
    exp.Detach,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Set,
    exp.Use,
)


class QueryFailed(Exception):
    """A query was refused, failed, ran out of time or returned too many rows."""


class DatabaseRefused(QueryFailed):
    """The synthesised rows broke a constraint of the context's tables (another draw may pass)."""


# --------------------------------------------------------------------------- gate


@contextmanager
def _quiet_sqlglot() -> Iterator[None]:
    # sqlglot logs a warning for every statement it cannot parse; hostile outputs would flood stderr.
    logger = logging.getLogger("sqlglot")
    previous, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = previous


def parse_query(sql: str | None) -> exp.Query | None:
    """The parsed query if ``sql`` is exactly one read-only query, else ``None`` (refused unrun).

    The tree is shared between callers (parsing is cached): copy it before changing it.
    """
    if not isinstance(sql, str) or not sql or len(sql) > MAX_SQL_CHARS or "\x00" in sql:
        return None
    return _parse(sql)


@lru_cache(maxsize=4096)
def _parse(sql: str) -> exp.Query | None:
    try:
        with _quiet_sqlglot():
            statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except Exception:  # noqa: BLE001 - any failure to parse untrusted text means "does not parse"
        return None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        return None
    tree = statements[0]
    if any(isinstance(node, _WRITE_NODES) for node in tree.walk()):
        return None
    return tree


# --------------------------------------------------------------------------- sandbox


@dataclass(frozen=True)
class Table:
    name: str
    ddl: str  # the CREATE TABLE statement as SQLite stored it
    columns: tuple[tuple[str, str], ...]  # (name, declared type)


@dataclass(frozen=True)
class Database:
    tables: tuple[Table, ...]
    rows: tuple[tuple[tuple[Any, ...], ...], ...]  # per table


def _read_only(action: int, arg1: str | None, arg2: str | None, _db: str | None, _source: str | None) -> int:
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_OK if (arg2 or "").lower() in _ALLOWED_FUNCTIONS else sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def _schema_only(action: int, arg1: str | None, arg2: str | None, _db: str | None, _source: str | None) -> int:
    # CREATE TABLE writes its definition into sqlite_master; nothing else may happen.
    if action in (sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_TRANSACTION):
        return sqlite3.SQLITE_OK
    if action in (sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_READ) and arg1 == "sqlite_master":
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _connect(timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temporary b-trees never touch the disk
    for limit, value in _LIMITS.items():
        conn.setlimit(limit, value)
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    return conn


def load_schema(context: str, timeout_s: float = 2.0) -> tuple[Table, ...] | None:
    """The tables a CREATE TABLE context defines, as SQLite reads them; ``None`` if it defines none
    or contains anything but table definitions."""
    if not isinstance(context, str) or not context.strip() or len(context) > MAX_CONTEXT_CHARS:
        return None
    conn = _connect(timeout_s)
    try:
        conn.set_authorizer(_schema_only)
        conn.executescript(context)
        conn.set_authorizer(None)
        tables = []
        for name, ddl in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY rowid"):
            if name.startswith("sqlite_"):
                continue
            columns = conn.execute("SELECT name, type FROM pragma_table_info(?) ORDER BY cid", (name,)).fetchall()
            tables.append(Table(name, ddl, tuple((c, t or "") for c, t in columns)))
        return tuple(tables) or None
    except (sqlite3.Error, sqlite3.Warning, ValueError):
        return None
    finally:
        conn.close()


class Sandbox:
    """One database loaded into a private in-memory SQLite that then only answers read-only queries.

    The authorizer is installed after the rows are inserted, so no query can change the database and
    several queries may share one sandbox. Each query gets its own time limit.
    """

    def __init__(self, database: Database, timeout_s: float):
        self.timeout_s = timeout_s
        self._conn = _connect(timeout_s)
        self._deadline = time.monotonic() + timeout_s
        self._conn.set_progress_handler(self._expired, 1000)
        try:
            for table, rows in zip(database.tables, database.rows):
                self._conn.execute(table.ddl)
                if rows:
                    marks = ", ".join("?" * len(table.columns))
                    quoted = table.name.replace('"', '""')
                    self._conn.executemany(f'INSERT INTO "{quoted}" VALUES ({marks})', rows)
        except (sqlite3.Error, OverflowError) as exc:
            self._conn.close()
            raise DatabaseRefused(str(exc)) from None
        self._conn.commit()
        self._conn.set_authorizer(_read_only)

    def _expired(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def run(self, sql: str) -> list[tuple]:
        """The rows of ``sql``; :class:`QueryFailed` when it is refused, fails, times out or returns too many."""
        self._deadline = time.monotonic() + self.timeout_s
        try:
            rows = self._conn.execute(sql).fetchmany(MAX_RESULT_ROWS + 1)
        except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError) as exc:
            raise QueryFailed(str(exc)) from None
        if len(rows) > MAX_RESULT_ROWS:
            raise QueryFailed(f"more than {MAX_RESULT_ROWS} result rows")
        return rows

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def run_sqlite(database: Database, sql: str, timeout_s: float) -> list[tuple]:
    """Rows of ``sql`` on ``database`` in a fresh sandbox."""
    with Sandbox(database, timeout_s) as sandbox:
        return sandbox.run(sql)


class _Timeout(Exception):
    pass


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expire(_signum, _frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_sqlglot(database: Database, tree: exp.Expression, timeout_s: float) -> list[tuple]:
    """Rows of ``tree`` computed by sqlglot's Python executor on the same tables (the study's engine)."""
    # The executor is plain Python: only a signal can stop it, and signals need the main thread.
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("the sqlglot executor enforces its time limit with SIGALRM and must run in the main thread")
    tables = {
        table.name.lower(): [{c.lower(): v for (c, _), v in zip(table.columns, row)} for row in rows]
        for table, rows in zip(database.tables, database.rows)
    }
    try:
        with _quiet_sqlglot(), _alarm(timeout_s):
            result = sqlglot_execute(tree, dialect="sqlite", tables=tables)
    except Exception as exc:  # noqa: BLE001 - the executor fails in many ways on untrusted SQL
        raise QueryFailed(f"{type(exc).__name__}: {exc}") from None
    if len(result.rows) > MAX_RESULT_ROWS:
        raise QueryFailed(f"more than {MAX_RESULT_ROWS} result rows")
    return [tuple(row) for row in result.rows]


# --------------------------------------------------------------------------- comparison


def _canonical_value(value: Any) -> Any:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return round(value, 9)
    return value


def same_result(gold: Sequence[tuple], predicted: Sequence[tuple], ordered: bool) -> bool:
    """Whether two results hold the same rows (in the same order when ``ordered``)."""
    a = [tuple(map(_canonical_value, row)) for row in gold]
    b = [tuple(map(_canonical_value, row)) for row in predicted]
    return a == b if ordered else Counter(a) == Counter(b)


def _informative(rows: Sequence[tuple]) -> bool:
    if not rows:
        return False
    if len(rows) == 1:  # an aggregate over no rows: COUNT gives 0, MIN/MAX/SUM/AVG give NULL
        return any(value not in (None, 0) for value in rows[0])
    return True


# --------------------------------------------------------------------------- gold analysis


class _Resolver:
    """Maps the gold's column references to (table index, column index) of the schema."""

    def __init__(self, tree: exp.Expression, tables: tuple[Table, ...]):
        self.tables = tables
        by_name = {t.name.lower(): i for i, t in enumerate(tables)}
        self.aliases: dict[str, int] = {}
        self.used: list[int] = []
        for node in tree.find_all(exp.Table):
            index = by_name.get(node.name.lower())
            if index is None:
                continue
            self.aliases[node.name.lower()] = index
            self.aliases[node.alias_or_name.lower()] = index
            if index not in self.used:
                self.used.append(index)

    def column(self, node: exp.Expression) -> tuple[int, int] | None:
        if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
            return None
        name = node.name.lower()
        if node.table:
            candidates = [self.aliases[node.table.lower()]] if node.table.lower() in self.aliases else []
        else:
            candidates = self.used + [i for i in range(len(self.tables)) if i not in self.used]
        for i in candidates:
            for j, (column, _) in enumerate(self.tables[i].columns):
                if column.lower() == name:
                    return i, j
        return None

    def is_string(self, node: exp.Expression) -> bool:
        """A double-quoted name that is no column: SQLite reads it as a string literal."""
        return (
            isinstance(node, exp.Column)
            and isinstance(node.this, exp.Identifier)
            and node.this.quoted
            and not node.table
            and self.column(node) is None
        )


_NOT_LITERAL = object()


def _number(text: str) -> int | float | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if value == value.to_integral_value() and "." not in text and "e" not in text.lower():
        return int(value) if abs(value) < 2**63 else float(value)
    return float(value)


def _literal(node: exp.Expression, resolver: _Resolver) -> Any:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else _number(node.this)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        value = _number(node.this.this)
        return -value if value is not None else None
    if isinstance(node, exp.Null):
        return None
    if resolver.is_string(node):
        return node.name
    return _NOT_LITERAL


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def _neighbours(value: Any, like: bool) -> list[Any]:
    """Values on a literal and just beside it; the first one is the literal itself."""
    if value is None:
        return [None]
    if isinstance(value, int):
        # 10n + 5 and n // 10 lie on the same side of n whether compared as numbers or as text,
        # which is how SQLite compares a number with the dataset's VARCHAR-declared columns.
        return [value, value - 1, value + 1, 10 * value + 5, value // 10]
    if isinstance(value, float):
        step = 10.0 ** -max(1, _decimals(value))
        return [value, round(value - step, 12), round(value + step, 12)]
    if like:  # strings that the pattern matches, plus one it does not
        return [value.replace("%", "").replace("_", "x"), value.replace("%", "ab").replace("_", "y"), value + "~"]
    values = [value, value + " x"]
    number = _number(value.strip()) if value.strip() else None
    if isinstance(number, int):  # numbers written as strings, common in the VARCHAR-typed columns
        values += [str(v) for v in _neighbours(number, False)[1:]]
    return values


_COMPARISONS = (
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Like,
    exp.ILike,
    exp.Glob,
    exp.Is,
    exp.NullSafeEQ,
)


@dataclass
class _Plan:
    anchors: dict[tuple[int, int], list[list[Any]]]  # column -> per literal: [on it, beside it, ...]
    links: dict[tuple[int, int], int]  # column -> class of columns compared with each other


def _plan(tree: exp.Expression, resolver: _Resolver) -> _Plan:
    anchors: dict[tuple[int, int], list[list[Any]]] = {}
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(c):
        while parent.setdefault(c, c) != c:
            c = parent[c]
        return c

    def link(a, b):
        parent[find(a)] = find(b)

    def anchor(column, value, like=False):
        anchors.setdefault(column, []).append(_neighbours(value, like))

    for node in tree.find_all(*_COMPARISONS, exp.Between, exp.In):
        left = node.this
        column = resolver.column(left)
        if isinstance(node, exp.Between):
            if column is not None:
                for bound in (node.args.get("low"), node.args.get("high")):
                    value = _literal(bound, resolver) if bound is not None else _NOT_LITERAL
                    if value is not _NOT_LITERAL:
                        anchor(column, value)
            continue
        if isinstance(node, exp.In):
            if column is None:
                continue
            query = node.args.get("query")
            if query is not None:
                inner = query.this if isinstance(query, exp.Subquery) else query
                selected = inner.selects[0] if isinstance(inner, exp.Select) and inner.selects else None
                other = resolver.column(selected) if selected is not None else None
                if other is not None:
                    link(column, other)
            for item in node.expressions:
                value = _literal(item, resolver)
                if value is not _NOT_LITERAL:
                    anchor(column, value)
            continue
        right = node.expression
        other = resolver.column(right)
        if column is None and other is not None:
            left, right, column, other = right, left, other, None
        if column is None:
            continue
        if other is not None:
            if other != column:
                link(column, other)
            continue
        value = _literal(right, resolver)
        if value is not _NOT_LITERAL:
            anchor(column, value, like=isinstance(node, (exp.Like, exp.ILike, exp.Glob)) and isinstance(value, str))

    roots: dict[tuple[int, int], int] = {}
    links = {column: roots.setdefault(find(column), len(roots)) for column in parent}
    return _Plan(anchors, links)


# --------------------------------------------------------------------------- synthesis


_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))


def _numeric_affinity(declared: str) -> bool:
    declared = declared.upper()
    if "INT" in declared:
        return True
    if any(key in declared for key in ("CHAR", "CLOB", "TEXT", "BLOB")) or not declared:
        return False
    return True  # REAL, FLOA, DOUB, NUMERIC, DECIMAL, BOOLEAN, DATE ...


def _generate(tables: tuple[Table, ...], plan: _Plan, rng: random.Random) -> Database:
    link_pools: dict[int, list[Any]] = {}
    for column, group in plan.links.items():
        # A pool a little smaller than the tables: joins find partners and NOT IN finds gaps.
        pool = link_pools.setdefault(group, list(range(1, rng.randint(3, 8) + 1)))
        pool.extend(v for values in plan.anchors.get(column, []) for v in values)
    all_rows = []
    for i, table in enumerate(tables):
        fillers = []
        for j, (_, declared) in enumerate(table.columns):
            numbers = [v for values in plan.anchors.get((i, j), []) for v in values if isinstance(v, (int, float))]
            if _numeric_affinity(declared) or numbers:
                low, high = (int(min(numbers)) - 10, int(max(numbers)) + 10) if numbers else (1, 60)
                fillers.append([rng.randint(low, high) for _ in range(4)])
            else:
                fillers.append([_word(rng) for _ in range(4)])
        rows = []
        for _ in range(rng.randint(*ROWS_PER_TABLE)):
            row = []
            for j in range(len(table.columns)):
                column = (i, j)
                groups = plan.anchors.get(column)
                draw = rng.random()
                if column in plan.links:
                    row.append(rng.choice(link_pools[plan.links[column]]))
                elif groups and draw < 0.85:
                    # About half of the anchored cells sit exactly on a literal, the rest beside one.
                    values = rng.choice(groups)
                    row.append(values[0] if draw < 0.45 else rng.choice(values[1:] or values))
                elif draw > 0.95:
                    row.append(None)
                else:
                    row.append(rng.choice(fillers[j]))
            rows.append(tuple(row))
        all_rows.append(tuple(rows))
    return Database(tables, tuple(all_rows))


@dataclass(frozen=True)
class Suite:
    """The databases of one example and the gold's result on each."""

    gold: str
    databases: tuple[Database, ...]
    results: tuple[tuple[tuple, ...], ...]
    ordered: bool

    def check(self, sql: str | None, timeout_s: float = 2.0, executor: str = "sqlite") -> bool | None:
        """Whether ``sql`` returns the gold's result on every database.

        With ``executor="sqlglot"`` the study's scorer is replayed: the predicted SQL is lower-cased,
        both queries run in sqlglot's Python executor and their results compare as printed strings;
        ``None`` when the gold itself fails there.
        """
        if executor == "sqlglot":
            return self._check_sqlglot(sql, timeout_s)
        if executor != "sqlite":
            raise ValueError(f"unknown SQL executor {executor!r}; use one of {', '.join(EXECUTORS)}")
        if parse_query(sql) is None:
            return False
        for database, expected in zip(self.databases, self.results):
            try:
                rows = run_sqlite(database, sql, timeout_s)
            except QueryFailed:
                return False
            if not same_result(expected, rows, self.ordered):
                return False
        return True

    def _check_sqlglot(self, sql: str | None, timeout_s: float) -> bool | None:
        gold = _for_sqlglot(self.gold, self.databases[0].tables)
        if gold is None:
            return None
        predicted = _for_sqlglot(sql.lower(), self.databases[0].tables) if sql else None
        for database in self.databases:
            try:
                expected = run_sqlglot(database, gold, timeout_s)
            except QueryFailed:
                return None
            if predicted is None:
                return False
            try:
                rows = run_sqlglot(database, predicted, timeout_s)
            except QueryFailed:
                return False
            if str(rows) != str(expected):
                return False
        return True


def _for_sqlglot(sql: str, tables: tuple[Table, ...]) -> exp.Expression | None:
    """The query with SQLite's double-quoted string literals made explicit (sqlglot reads them as names)."""
    tree = parse_query(sql)
    if tree is None:
        return None
    resolver = _Resolver(tree, tables)
    return tree.transform(lambda node: exp.Literal.string(node.name) if resolver.is_string(node) else node)


_STRICTER = {exp.GT: exp.GTE, exp.GTE: exp.GT, exp.LT: exp.LTE, exp.LTE: exp.LT}


def _probes(tree: exp.Query, resolver: _Resolver) -> tuple[str | None, list[str]]:
    """The gold without its WHERE, and near misses a good suite tells apart from the gold: the gold
    with one top-level condition dropped, and with one comparison's boundary moved (``>`` / ``>=``)."""
    where = tree.args.get("where") if isinstance(tree, exp.Select) else None
    if where is None:
        return None, []
    stripped = tree.copy()
    stripped.set("where", None)
    probes = []
    conditions = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    if len(conditions) > 1:
        for k in range(len(conditions)):
            probe = tree.copy()
            rest = list(probe.args["where"].this.flatten())
            del rest[k]
            probe.set("where", exp.Where(this=exp.and_(*rest, copy=False)))
            probes.append(probe.sql(dialect="sqlite"))
    comparisons = [n for n in where.find_all(*_STRICTER) if _literal(n.expression, resolver) is not _NOT_LITERAL]
    for k in range(len(comparisons)):
        probe = tree.copy()
        node = [
            n for n in probe.args["where"].find_all(*_STRICTER) if _literal(n.expression, resolver) is not _NOT_LITERAL
        ][k]
        node.replace(_STRICTER[type(node)](this=node.this.copy(), expression=node.expression.copy()))
        probes.append(probe.sql(dialect="sqlite"))
    return stripped.sql(dialect="sqlite"), probes


def seed_of(context: str, gold: str) -> str:
    """The seed of an example's suite: a digest of its content, so ids and row order do not matter."""
    return hashlib.sha256(f"{context}\x00{gold}".encode("utf-8", "surrogatepass")).hexdigest()


@lru_cache(maxsize=8192)
def build_suite(context: str, gold: str, databases: int = 3, timeout_s: float = 2.0) -> Suite | None:
    """The test suite of one example, or ``None`` when it is unscorable (see the module docstring).

    Candidate databases are drawn until ``databases`` informative ones are found whose results also
    tell every near miss of :func:`_probes` apart from the gold, or the attempts run out; the kept
    databases are then the informative ones that separate the most near misses.
    """
    if databases < 1:
        raise ValueError(f"databases must be at least 1, got {databases}")
    tables = load_schema(context, timeout_s)
    tree = parse_query(gold)
    if tables is None or tree is None:
        return None
    resolver = _Resolver(tree, tables)
    plan = _plan(tree, resolver)
    unfiltered, probes = _probes(tree, resolver)
    ordered = tree.args.get("order") is not None
    seed = seed_of(context, gold)
    candidates: list[tuple[Database, tuple[tuple, ...], frozenset[int]]] = []
    for attempt in range(databases * ATTEMPTS_PER_DATABASE):
        database = _generate(tables, plan, random.Random(f"{seed}:{attempt}"))
        try:
            sandbox = Sandbox(database, timeout_s)
        except DatabaseRefused:
            continue  # the context's constraints refused this draw; another may pass
        with sandbox:
            try:
                rows = sandbox.run(gold)
            except QueryFailed:
                return None  # the gold itself does not run: no database can fix that
            if not _informative(rows) or (unfiltered and _differs(sandbox, unfiltered, rows, ordered) is False):
                continue
            separated = frozenset(k for k, probe in enumerate(probes) if _differs(sandbox, probe, rows, ordered))
        candidates.append((database, tuple(rows), separated))
        if len(candidates) >= databases and len(frozenset().union(*(c[2] for c in candidates))) == len(probes):
            break
        if len(candidates) >= 3 * databases:
            break
    if len(candidates) < databases:
        return None
    chosen: list[int] = []
    covered: frozenset[int] = frozenset()
    while len(chosen) < databases:  # greedy cover, ties to the earliest draw
        best = max(
            (i for i in range(len(candidates)) if i not in chosen), key=lambda i: len(candidates[i][2] - covered)
        )
        chosen.append(best)
        covered |= candidates[best][2]
    chosen.sort()
    return Suite(gold, tuple(candidates[i][0] for i in chosen), tuple(candidates[i][1] for i in chosen), ordered)


def _differs(sandbox: Sandbox, sql: str, rows: Sequence[tuple], ordered: bool) -> bool | None:
    try:
        return not same_result(rows, sandbox.run(sql), ordered)
    except QueryFailed:
        return None
