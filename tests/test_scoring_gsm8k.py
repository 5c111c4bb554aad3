"""GSM8K scorer: gold answers, number equivalence, absurd numbers, and agreement with lm-evaluation-harness."""

from __future__ import annotations

import json
import random
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import pytest
import yaml

from tunebench.tasks.scoring import gsm8k


@pytest.fixture(scope="module")
def gold_rows(mirror):
    with open(mirror / "gsm8k" / "test.jsonl") as handle:
        return [json.loads(line) for line in handle]


def test_gold_solutions_score_one_strict(gold_rows):
    assert len(gold_rows) == 1319
    for row in gold_rows:
        final = row["answer"].rsplit("####", 1)[1].strip()
        # Gold given as the whole solution and as the bare final number ("1,450,000" keeps its commas).
        for gold in ({"answer": row["answer"]}, {"answer": final}):
            assert gsm8k.score(row["answer"], gold) == {"strict_accuracy": True, "flexible_accuracy": True}


@pytest.mark.parametrize(
    "prediction, strict, flexible",
    [
        ("She pays 3 * 6 = 18 dollars.\n#### 1,234", True, True),
        ("#### $1,234.00", True, True),
        ("The answer is $1,234.", False, True),
        ("#### 1234.0\nThat took 2 steps.", True, False),
        ("#### 1,235", False, False),
        ("#### 12,34", False, False),  # not a thousands grouping: two numbers, 12 and 34
        ("I cannot tell.", False, False),
        ("#### 1234 and then 1234", True, True),
    ],
)
def test_number_equivalence(prediction, strict, flexible):
    assert gsm8k.score(prediction, {"answer": "1234"}) == {"strict_accuracy": strict, "flexible_accuracy": flexible}


def test_negative_and_decimal_answers():
    assert gsm8k.score("The change is -7 degrees.", {"answer": "-7"})["flexible_accuracy"] is True
    assert gsm8k.score("#### 2.50", {"answer": 2.5})["strict_accuracy"] is True
    assert gsm8k.score("#### 2.05", {"answer": "2.5"})["strict_accuracy"] is False
    assert gsm8k.extract("step 1 gives 4, step 2 gives 9") == "9"
    assert gsm8k.extract("#### 1,000.00\nmore text 5") == "1000"
    assert gsm8k.extract("no digits here") is None


def test_absurd_numbers_are_wrong_not_a_crash():
    huge = "9" * 100_000
    assert gsm8k.score(f"#### {huge}", {"answer": "99"}) == {"strict_accuracy": False, "flexible_accuracy": False}
    assert gsm8k.score("#### 5", {"answer": huge}) == {"strict_accuracy": None, "flexible_accuracy": None}
    assert gsm8k.score("#### 5", {"answer": "five"}) == {"strict_accuracy": None, "flexible_accuracy": None}
    # Digits of other scripts are not read as numbers (the reference filters use [0-9] too).
    assert gsm8k.extract("#### \u0663") is None


# ----------------------------------------------------------------- agreement with lm-evaluation-harness


def _harness_filters():
    """The gsm8k task's two filter pipelines, built from the installed harness's own YAML."""
    import lm_eval
    from lm_eval.filters.extraction import RegexFilter
    from lm_eval.filters.selection import TakeFirstFilter

    spec = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())
    pipelines = {}
    for entry in spec["filter_list"]:
        steps = []
        for step in entry["filter"]:
            if step["function"] == "regex":
                steps.append(RegexFilter(**{k: v for k, v in step.items() if k != "function"}))
            elif step["function"] == "take_first":
                steps.append(TakeFirstFilter())
            else:
                raise AssertionError(f"unexpected filter {step['function']} in the harness's gsm8k.yaml")
        pipelines[entry["name"]] = steps
    ignore = spec["metric_list"][0]["regexes_to_ignore"]
    return pipelines, ignore


def _run_pipeline(steps, outputs):
    responses = [[text] for text in outputs]
    for step in steps:
        responses = step.apply(responses, [None] * len(outputs))
    return list(responses)


def _as_number(text, ignore):
    # What the harness's exact_match then compares: the extracted text with these patterns removed.
    for pattern in ignore:
        text = re.sub(pattern, "", text)
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _number_text(rng):
    kind = rng.random()
    n = rng.randint(0, 500) if kind < 0.5 else rng.randint(1000, 2_000_000) if kind < 0.8 else rng.randint(-300, -1)
    if rng.random() < 0.15:
        return f"{n}.{rng.randint(0, 99):02d}"
    return f"{n:,}" if abs(n) >= 1000 and rng.random() < 0.5 else str(n)


def model_like_outputs(rows, count=1500, seed=2024):
    """Outputs shaped like real generations: reasoning from GSM8K solutions with varied endings."""
    endings = [
        lambda body, n, q: f"{body}\n#### {n}",
        lambda body, n, q: f"{body}\nThe answer is {n}.",
        lambda body, n, q: f"{body}\nThe answer is ${n}.",
        lambda body, n, q: f"{body}\n#### {n}\n\nQuestion: {q}",
        lambda body, n, q: f"{body}\nSo the final answer is {n} dollars.",
        lambda body, n, q: "I am not sure how to solve this problem.",
        lambda body, n, q: f"{body}\nAnswer: {n}",
        lambda body, n, q: f"Let's think step by step. {' '.join(body.splitlines())} Therefore, the total is {n}",
        lambda body, n, q: f"{body}\n#### {n}\nThe answer is {n}.",
        lambda body, n, q: body,
        lambda body, n, q: n,
        lambda body, n, q: f"The answer is {n}%.",
        lambda body, n, q: f"{body}\nThey need {n} more, which is about half of the total.",
        lambda body, n, q: f"{body}\nTotal: {n} - 3 = {_number_text(random.Random(n))}",
        lambda body, n, q: f"{body}\nShe ends with {n} apples, 2 pears and 1/2 of a melon.",
    ]
    rng = random.Random(seed)
    outputs = []
    for i in range(count):
        row = rows[i % len(rows)]
        body = row["answer"].rsplit("####", 1)[0].strip()
        outputs.append(endings[i % len(endings)](body, _number_text(rng), row["question"]))
    return outputs


def test_extraction_agrees_with_lm_evaluation_harness(gold_rows):
    pipelines, ignore = _harness_filters()
    assert set(pipelines) == {"strict-match", "flexible-extract"}
    outputs = model_like_outputs(gold_rows)
    ours = {"strict-match": gsm8k.extract_strict, "flexible-extract": gsm8k.extract_flexible}
    for name, steps in pipelines.items():
        theirs = [_as_number(text, ignore) for text in _run_pipeline(steps, outputs)]
        mine = [ours[name](text) for text in outputs]
        agree = sum(a == b for a, b in zip(theirs, mine))
        found = sum(value is not None for value in mine)
        print(f"{name}: {agree}/{len(outputs)} agree; {found} with a number")
        assert agree / len(outputs) >= 0.99
        assert 0.1 * len(outputs) < found < len(outputs)  # the corpus has outputs with and without one
