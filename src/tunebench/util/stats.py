"""Seeded bootstrap confidence intervals for per-example verdicts.

Every metric in ``metrics.json`` is a mean of per-example verdicts (True/False, or a number); its
interval is the percentile bootstrap of that mean. The generator is seeded, so the same verdicts give
the same interval on every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Resampled means are drawn in blocks of at most this many cells so memory stays flat for large n.
_BLOCK_CELLS = 4_000_000


def bootstrap_ci(
    values: Sequence[bool | float], samples: int = 1000, confidence: float = 0.95, seed: int = 42
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of ``values``; ``(None, None)`` for no values."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    data = np.asarray(values, dtype=float)
    n = data.size
    if n == 0:
        return None, None
    if not np.all(np.isfinite(data)):
        raise ValueError("bootstrap_ci needs finite values; drop unscorable rows (None) before calling it")
    rng = np.random.default_rng(seed)
    if np.all((data == 0) | (data == 1)):
        # For 0/1 verdicts the number of ones in a resample is exactly Binomial(n, mean), so drawing
        # that count is the same bootstrap at O(samples) cost instead of O(samples * n).
        means = rng.binomial(n, data.mean(), size=samples) / n
    else:
        rows = max(1, _BLOCK_CELLS // n)
        means = np.concatenate(
            [
                data[rng.integers(0, n, size=(min(rows, samples - start), n))].mean(axis=1)
                for start in range(0, samples, rows)
            ]
        )
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def summarize(
    verdicts: Iterable[Mapping[str, bool | float | None]],
    metrics: Sequence[str],
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 42,
) -> dict[str, dict[str, float | int | None]]:
    """Mean, interval and count of every metric; ``None`` verdicts (unscorable rows) are left out of n."""
    verdicts = list(verdicts)
    summary = {}
    for metric in metrics:
        values = []
        for i, verdict in enumerate(verdicts):
            if metric not in verdict:
                raise ValueError(
                    f"verdict {i} has no value for metric {metric!r}; every verdict must name every metric"
                )
            if verdict[metric] is not None:
                values.append(float(verdict[metric]))
        low, high = bootstrap_ci(values, samples=samples, confidence=confidence, seed=seed)
        summary[metric] = {
            "value": float(np.mean(values)) if values else None,
            "ci_low": low,
            "ci_high": high,
            "n": len(values),
        }
    return summary


def paired_bootstrap(
    better: Sequence[float], than: Sequence[float], samples: int = 1000, confidence: float = 0.95, seed: int = 42
) -> tuple[float | None, float | None, float | None]:
    """Mean of ``better - than`` over the same rows, with its paired percentile bootstrap interval.

    Both runs answered the same test rows, so the rows are resampled together: the interval is that of
    the difference itself, narrower than two marginal intervals read side by side whenever the runs
    succeed and fail on correlated rows. ``(None, None, None)`` for no rows.
    """
    if len(better) != len(than):
        raise ValueError(f"paired values must have one entry per row each, got {len(better)} and {len(than)}")
    differences = np.asarray(better, dtype=float) - np.asarray(than, dtype=float)
    if differences.size == 0:
        return None, None, None
    low, high = bootstrap_ci(differences, samples=samples, confidence=confidence, seed=seed)
    return float(differences.mean()), low, high
