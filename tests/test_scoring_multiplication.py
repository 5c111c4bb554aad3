"""Multiplication scorer: the last integer written must be the product."""

from __future__ import annotations

import random

import pytest

from tunebench.tasks.multiplication import make_row
from tunebench.tasks.scoring import multiplication

GOLD = {"answer": "452046", "a": 458, "b": 987}


@pytest.mark.parametrize(
    "prediction, correct",
    [
        ("458 * 987 = 452,046", True),
        ("The product is 452046.", True),
        ("452046.0", True),
        ("First 458 * 7 = 3206, ... so the result is 452,046. Check: 3206 + 36640 = 39846", False),
        ("GPT-3.5 said 451,086", False),
        ("450,606 (step by step)", False),
        ("452,046.5", False),
        ("45,2046", False),  # a misplaced comma splits the number: the last integer is 2046
        ("no number at all", False),
        ("", False),
    ],
)
def test_last_integer(prediction, correct):
    assert multiplication.score(prediction, GOLD) == {"accuracy": correct}


def test_gold_from_the_factors_when_there_is_no_answer():
    assert multiplication.score("= 452046", {"a": 458, "b": 987}) == {"accuracy": True}
    assert multiplication.score("= 452047", {"a": 458, "b": 987}) == {"accuracy": False}
    assert multiplication.score("= 452046", {"answer": 452046}) == {"accuracy": True}


def test_unusable_gold_is_unscorable():
    for gold in ({}, {"answer": "many"}, {"answer": "12.5"}, {"a": "458", "b": 987}):
        assert multiplication.score("452046", gold) == {"accuracy": None}


def test_absurdly_long_numbers_are_wrong():
    assert multiplication.score("9" * 200_000, GOLD) == {"accuracy": False}
    assert multiplication.score("1" + ",000" * 50_000, GOLD) == {
        "accuracy": False
    }  # one grouped number, 150,001 digits
    assert multiplication.extract("1" + ",000" * 50_000) is None
    # "1,1,...,1,234" is no grouped number until its tail: the last integer is 1,234.
    assert multiplication.extract("1," * 100_000 + "234") == "1234"


def test_the_task_s_worked_answers_score_right_and_a_changed_product_wrong():
    rng = random.Random(5)
    for _ in range(200):
        row = make_row(rng.randint(1000, 9999), rng.randint(1000, 9999))
        assert multiplication.score(row["completion"], row) == {"accuracy": True}
        wrong = row["completion"].rsplit("=", 1)[0] + f"= {int(row['answer']) + 10}"
        assert multiplication.score(wrong, row) == {"accuracy": False}
