"""SQL generation (study A2): a question and CREATE TABLE statements in, one SQL query out.

b-mc2/sql-create-context has a single split, so rows are assigned to train/validation/test by a hash
of their content: the same row lands in the same split whatever the file order. Its column types
were inferred, and many numeric columns are declared VARCHAR; queries that compare such a column
with a bare number behave differently under a real engine, so the study dropped them
(``drop_varchar_numeric``; the manifest counts the rows dropped per split).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..util.errors import ConfigError
from . import data, register
from .base import BadRow, Filter, Prepared, Task, fraction, hub, section

_CREATE = re.compile(r"CREATE\s+TABLE\s+[`\"]?(\w+)[`\"]?\s*\(([^()]*)\)", re.IGNORECASE)
_COMPARISON_WITH_NUMBER = re.compile(r"(?:[=<>]|\bBETWEEN\b|\bAND\b)\s*-?\d", re.IGNORECASE)
_SIMPLE_COMPARISON = re.compile(r"(?:([\w$]+)\.)?([\w$]+)\s*(?:=|!=|<>|<=|>=|<|>)\s*-?\d+(?:\.\d+)?\b")

_FULL_FILE = "sql-create-context/sql_create_context_v4.json"  # the hub release, if a mirror holds it
_SAMPLE_FILE = "sql-create-context/sample.jsonl"


def schema_of(context: str) -> dict[str, dict[str, str]]:
    """``{table: {column: TYPE}}`` of the CREATE TABLE statements, names lower-cased."""
    tables: dict[str, dict[str, str]] = {}
    for table, body in _CREATE.findall(context):
        columns = tables.setdefault(table.lower(), {})
        for item in body.split(","):
            parts = item.split()
            if len(parts) >= 2:
                columns[parts[0].strip('`"').lower()] = parts[1].upper()
    return tables


def compares_varchar_with_number(sql: str, schema: Mapping[str, Mapping[str, str]]) -> bool:
    """Whether the query compares (=, <>, <, <=, >, >=, BETWEEN) a VARCHAR-declared column with a bare number."""
    if not _COMPARISON_WITH_NUMBER.search(sql):
        return False
    import sqlglot
    from sqlglot import exp

    def declared(table: str | None, column: str, aliases: Mapping[str, str]) -> set[str]:
        column = column.lower()
        if table:
            return {schema.get(aliases.get(table.lower(), table.lower()), {}).get(column, "")}
        return {columns.get(column, "") for columns in schema.values()}

    arithmetic = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg, exp.Paren)

    def is_number(node) -> bool:
        """A numeric literal or arithmetic of them (the data has chained scores like 71 - 66 - 74)."""
        if isinstance(node, exp.Literal):
            return not node.is_string
        return isinstance(node, arithmetic) and all(is_number(child) for child in node.iter_expressions())

    def columns_of(node) -> list:
        """The columns of a column or of arithmetic on columns (``sp + fs < 27``)."""
        if isinstance(node, exp.Column):
            return [node]
        if isinstance(node, arithmetic):
            return [col for child in node.iter_expressions() for col in columns_of(child)]
        return []

    try:
        # The dataset quotes string literals with double quotes, as MySQL reads them.
        tree = sqlglot.parse_one(sql, read="mysql")
    except sqlglot.errors.SqlglotError:
        return any("VARCHAR" in declared(t, c, {}) for t, c in _SIMPLE_COMPARISON.findall(sql))
    aliases = {t.alias_or_name.lower(): t.name.lower() for t in tree.find_all(exp.Table)}
    for node in tree.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Between):
        if isinstance(node, exp.Between):
            pairs = [(node.this, node.args.get("low")), (node.this, node.args.get("high"))]
        else:
            pairs = [(node.this, node.expression), (node.expression, node.this)]
        for side, other in pairs:
            if other is not None and is_number(other):
                if any("VARCHAR" in declared(col.table or None, col.name, aliases) for col in columns_of(side)):
                    return True
    return False


def prompt_text(question: str, context: str) -> str:
    return f"Tables: {context}\nQuestion: {question}"


def _row(index: int, record: Mapping[str, Any]) -> dict:
    question = data.text_field(record, "question")
    context = data.text_field(record, "context")
    answer = data.text_field(record, "answer", "SQL answer")
    if not schema_of(context):
        raise BadRow("context has no CREATE TABLE statement")
    key = data.stable_int("sql-row", question, context, answer)
    return {
        "id": f"sql-{key:016x}",
        "prompt": prompt_text(question, context),
        "completion": answer,
        "answer": answer,
        "context": context,
        "question": question,
    }


class Sql(Task):
    name = "sql"
    order = 1
    schema = section(
        "SQL generation from a question and CREATE TABLE statements.",
        hub=hub("b-mc2/sql-create-context"),
        drop_varchar_numeric={
            "type": "boolean",
            "default": True,
            "description": "Drop rows whose SQL compares a VARCHAR-declared column with a bare number.",
        },
        validation_fraction=fraction(0.05, "Share of rows held out for validation."),
        test_fraction=fraction(0.05, "Share of rows held out for testing."),
    )
    scorer = ".sql"
    scorer_helpers = ("tasks/scoring/sqlsuite.py",)
    scorer_options = ("sql_databases", "sql_timeout_s", "sql_executor")
    label = "SQL"
    instruction = (
        "Write one SQL query that answers the question, using only the tables given by the CREATE TABLE statements."
    )
    primary_metric = "execution_accuracy"
    max_new_tokens = 160  # 99 % of gold queries are under 70 tokens, the longest about 130
    baseline_variants = ("default",)

    hub_records = {"train": 78577}
    mirror_files = {  # records and sha256 of the published files (the mirror's SOURCES.md)
        "sql-create-context/sql_create_context_v4.json": (
            78577,
            "280961458ccb74731104ae9af715797a0332327a33a210120a6884085a5c03f0",
        ),
        "sql-create-context/sample.jsonl": (2410, "95f5c0bffa10cbb5ccbf8b5e06c28d382b772823700f671d3d044a1aaa084029"),
    }

    def prepare(self, options: Mapping[str, Any], mirror, seed: int) -> Prepared:
        source = data.Source(self.name, mirror, options.get("hub"))
        notes = []
        if mirror is None:
            part, records = "train", source.hub_split("train")
        elif source.has(_FULL_FILE):
            part, records = _FULL_FILE, source.json_array(_FULL_FILE)
        else:
            part, records = _SAMPLE_FILE, source.jsonl(_SAMPLE_FILE)
            notes.append(
                f"The mirror holds only {_SAMPLE_FILE}, a sample of the 78,577-row dataset, so every split is small."
            )
        rows = source.convert(part, records, _row)

        duplicates = Filter("duplicate", "the same question, context and SQL as an earlier row (kept once)")
        varchar = Filter("varchar_numeric", "the SQL compares a column declared VARCHAR with a bare number")
        validation_fraction = options["validation_fraction"]
        test_fraction = options["test_fraction"]
        if validation_fraction + test_fraction >= 1:
            raise ConfigError(
                "tasks.sql.validation_fraction plus tasks.sql.test_fraction must stay below 1 to leave training rows."
            )
        splits = data.split_by_content(rows, lambda row: (row["id"],), validation_fraction, test_fraction)
        drop = options["drop_varchar_numeric"]
        seen: set[str] = set()
        for split in data.SPLITS:
            kept = []
            for row in splits[split]:
                if row["id"] in seen:
                    duplicates.dropped[split] = duplicates.dropped.get(split, 0) + 1
                    continue
                seen.add(row["id"])
                if drop and compares_varchar_with_number(row["answer"], schema_of(row["context"])):
                    varchar.dropped[split] = varchar.dropped.get(split, 0) + 1
                    continue
                kept.append(row)
            splits[split] = kept
        filters = [duplicates] + ([varchar] if drop else [])
        if not drop:
            notes.append("drop_varchar_numeric is off: rows comparing VARCHAR columns with numbers are kept.")
        notes.append("Splits are assigned by a hash of each row's question, context and SQL, independent of row order.")
        return source.prepared(splits, filters=filters, notes=notes)

    def baseline_messages(self, row, train, variant, options):
        if variant != "default":
            raise ConfigError(f"the sql baseline has no prompt variant {variant!r}; use default.")
        system = "You are an expert in SQL. You answer questions about a database by writing a single SQLite query."
        user = (
            f"The database has these tables:\n{row['context']}\n\n"
            f"Question: {row['question']}\n\n"
            "Write one SQL query that answers the question. Put the query between <SQL> and </SQL> "
            "and write nothing else."
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


TASK = register(Sql())
