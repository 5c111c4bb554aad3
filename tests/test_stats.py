"""Bootstrap confidence intervals: determinism, coverage of the right width, and the summary contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunebench.util.stats import bootstrap_ci, summarize


def naive_percentile_bootstrap(values, samples, confidence, seed):
    """The textbook loop: resample n values with replacement, take the mean, read the percentiles."""
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    means = [data[rng.integers(0, len(data), len(data))].mean() for _ in range(samples)]
    alpha = 1 - confidence
    return tuple(np.quantile(means, [alpha / 2, 1 - alpha / 2]))


def test_same_seed_same_interval_other_seed_other_interval():
    values = [True] * 37 + [False] * 63
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_interval_brackets_the_mean_and_has_the_normal_width():
    values = [True] * 300 + [False] * 700
    low, high = bootstrap_ci(values, samples=4000)
    assert low < 0.3 < high
    expected = 2 * 1.96 * math.sqrt(0.3 * 0.7 / 1000)
    assert high - low == pytest.approx(expected, rel=0.1)


def test_boolean_shortcut_matches_the_naive_bootstrap():
    rng = np.random.default_rng(3)
    values = list(rng.random(150) < 0.62)
    ours = bootstrap_ci(values, samples=3000, seed=11)
    naive = naive_percentile_bootstrap(values, samples=3000, confidence=0.95, seed=12)
    assert ours == pytest.approx(naive, abs=0.02)


def test_real_valued_bootstrap_matches_the_naive_one():
    rng = np.random.default_rng(5)
    values = list(rng.normal(10.0, 2.0, size=120))
    ours = bootstrap_ci(values, samples=3000, seed=1)
    naive = naive_percentile_bootstrap(values, samples=3000, confidence=0.95, seed=2)
    assert ours == pytest.approx(naive, abs=0.08)
    width = 2 * 1.96 * np.std(values) / math.sqrt(len(values))
    assert ours[1] - ours[0] == pytest.approx(width, rel=0.12)


def test_narrower_confidence_gives_a_narrower_interval():
    values = [True, False, False, True, True] * 20
    low95, high95 = bootstrap_ci(values, confidence=0.95)
    low80, high80 = bootstrap_ci(values, confidence=0.80)
    assert low95 <= low80 and high80 <= high95 and (high80 - low80) < (high95 - low95)


def test_degenerate_inputs():
    assert bootstrap_ci([]) == (None, None)
    assert bootstrap_ci([True] * 12) == (1.0, 1.0)
    assert bootstrap_ci([0.25]) == (0.25, 0.25)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([True], confidence=1.0)
    with pytest.raises(ValueError, match="samples"):
        bootstrap_ci([True], samples=0)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, float("nan")])


def test_summarize_leaves_unscorable_rows_out_of_n():
    verdicts = [
        {"execution_accuracy": True, "exact_match": False},
        {"execution_accuracy": None, "exact_match": True},
        {"execution_accuracy": False, "exact_match": False},
        {"execution_accuracy": True, "exact_match": None},
    ]
    summary = summarize(verdicts, ("execution_accuracy", "exact_match"), samples=500, confidence=0.9, seed=4)
    assert list(summary) == ["execution_accuracy", "exact_match"]
    assert summary["execution_accuracy"]["n"] == 3
    assert summary["execution_accuracy"]["value"] == pytest.approx(2 / 3)
    assert summary["exact_match"]["n"] == 3
    assert summary["exact_match"]["value"] == pytest.approx(1 / 3)
    for item in summary.values():
        assert set(item) == {"value", "ci_low", "ci_high", "n"}
        assert item["ci_low"] <= item["value"] <= item["ci_high"]
    low, high = bootstrap_ci([True, False, True], samples=500, confidence=0.9, seed=4)
    assert (summary["execution_accuracy"]["ci_low"], summary["execution_accuracy"]["ci_high"]) == (low, high)


def test_summarize_all_unscorable_and_missing_metric():
    summary = summarize([{"accuracy": None}] * 3, ("accuracy",))
    assert summary == {"accuracy": {"value": None, "ci_low": None, "ci_high": None, "n": 0}}
    with pytest.raises(ValueError, match="verdict 1 has no value for metric 'accuracy'"):
        summarize([{"accuracy": True}, {}], ("accuracy",))
