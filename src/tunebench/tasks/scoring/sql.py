"""SQL generation: execution accuracy on a synthesised test suite, exact match and parse rate.

The query is taken from the first ``<SQL>…</SQL>`` (an unclosed ``<SQL>`` runs to the end), else
the first fenced code block, else the whole text. ``parse_rate`` says whether it is a single
read-only query; ``exact_match`` compares normalised token sequences (keywords and names
case-folded, quoted text kept, quote style and spacing ignored); ``execution_accuracy`` runs it on
the example's test suite (:mod:`tunebench.tasks.scoring.sqlsuite`) and is ``None`` for unscorable examples.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot.tokens import TokenType

from .sqlsuite import EXECUTORS, MAX_CONTEXT_CHARS, MAX_SQL_CHARS, build_suite, parse_query

METRICS = ("execution_accuracy", "exact_match", "parse_rate")

_DIALECT = sqlglot.Dialect.get_or_raise("sqlite")
_QUOTED = {TokenType.STRING, TokenType.IDENTIFIER}


_OPEN_TAG = re.compile(r"<sql>", re.IGNORECASE)
_CLOSE_TAG = re.compile(r"</sql>", re.IGNORECASE)


def _between(text: str, opening: re.Pattern, closing: re.Pattern) -> str | None:
    # Two plain searches keep this linear on hostile text; a lazy ".*?" over many openers is quadratic.
    start = opening.search(text)
    if start is None:
        return None
    end = closing.search(text, start.end())
    return text[start.end() :] if end is None else text[start.end() : end.start()]


_FENCE = re.compile("```")


def _unfence(text: str) -> str | None:
    block = _between(text, _FENCE, _FENCE)
    if block is None:
        return None
    first, newline, rest = block.partition("\n")
    # The opening fence may carry a language tag ("```sql"); a one-line block has none.
    return rest if newline and first.strip().lower() in ("", "sql", "sqlite") else block


def extract(prediction: str) -> str | None:
    """The SQL text of a model output, without trailing semicolons; ``None`` when empty."""
    query = _between(prediction, _OPEN_TAG, _CLOSE_TAG)
    if query is not None:
        query = _unfence(query) if "```" in query else query
    else:
        query = _unfence(prediction)
        if query is None:
            query = prediction
    query = query.strip().rstrip(";").strip()
    return query or None


def normalise(sql: str) -> tuple[tuple[str, str], ...] | None:
    """Token sequence for exact match; ``None`` when the text is too long or does not tokenise."""
    if len(sql) > MAX_SQL_CHARS:
        return None
    try:
        tokens = _DIALECT.tokenize(sql)
    except Exception:  # noqa: BLE001 - untrusted text that does not tokenise cannot match
        return None
    out = []
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            continue
        quoted = token.token_type in _QUOTED and sql[token.start] in "'\"`["
        out.append(("quoted", token.text) if quoted else (token.token_type.name, token.text.lower()))
    return tuple(out)


@lru_cache(maxsize=8192)
def _gold_tokens(answer: str) -> tuple[tuple[str, str], ...] | None:
    return normalise(answer)


def score(
    prediction: str,
    gold: Mapping[str, Any],
    *,
    sql_databases: int = 3,
    sql_timeout_s: float = 2.0,
    sql_executor: str = "sqlite",
    **_other_settings: Any,
) -> dict[str, bool | None]:
    """Verdicts of the three metrics. Other keys of the ``evaluation`` config section are accepted and
    ignored, so the whole section can be passed."""
    if sql_executor not in EXECUTORS:
        raise ValueError(f"unknown SQL executor {sql_executor!r}; use one of {', '.join(EXECUTORS)}")
    answer, context = gold.get("answer"), gold.get("context")
    query = extract(prediction)
    parsed = parse_query(query) is not None
    gold_sql = answer.strip().rstrip(";").strip() if isinstance(answer, str) else ""
    if not gold_sql or len(gold_sql) > MAX_SQL_CHARS:  # the caches below must not hold huge keys
        return {"execution_accuracy": None, "exact_match": None, "parse_rate": parsed}
    expected = _gold_tokens(gold_sql)
    exact = query is not None and expected is not None and normalise(query) == expected
    suite = None
    if isinstance(context, str) and len(context) <= MAX_CONTEXT_CHARS:
        suite = build_suite(context, gold_sql, sql_databases, sql_timeout_s)
    execution = None if suite is None else suite.check(query, sql_timeout_s, sql_executor)
    return {"execution_accuracy": execution, "exact_match": exact, "parse_rate": parsed}
