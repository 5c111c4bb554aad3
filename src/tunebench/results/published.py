"""The case studies' published figures, and our runs set beside them.

``resources/published.csv`` holds one row per figure the studies state, with its source file and the
claim in our words. :func:`compare` finds, for each figure of a kind we measure too, the run of ours
that corresponds to it: same task, stage, metric, model size and method where we ran them, else the
largest size and the published method's nearest neighbour, and says which of these differ.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from ..util.errors import DataError
from . import METHODS, labels

COLUMNS = [
    "id",
    "study",
    "source",
    "task",
    "model",
    "size",
    "method",
    "stage",
    "metric",
    "quantity",
    "relation",
    "value",
    "unit",
    "claim",
]
#: Quantities we can measure on our own runs, with the function that does it.
QUANTITIES = ("accuracy", "gain", "gain_over_finetuned", "epoch_tokens", "epoch_minutes", "train_hours", "devices")


def load() -> pd.DataFrame:
    with resources.files("tunebench").joinpath("resources/published.csv").open() as handle:
        frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"the packaged published.csv lacks the columns {', '.join(missing)}; reinstall tunebench.")
    frame["value"] = pd.to_numeric(frame["value"])
    return frame


def reference_lines(published: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """Published figures of reference models (GPT-4, ...) for one task and metric."""
    return published[
        (published["stage"] == "reference")
        & (published["task"] == task)
        & (published["metric"] == metric)
        & (published["quantity"] == "accuracy")
    ]


def _pick(candidates: pd.DataFrame, size: str, method: str) -> tuple[pd.Series | None, list[str]]:
    """The run matching ``size`` and ``method``, else the nearest one, and what differs from the figure."""
    if candidates.empty:
        return None, []
    notes = []
    same_size = candidates[candidates["size"].str.upper() == size.upper()] if size else candidates
    if same_size.empty:
        largest = candidates["params_b"].max()
        same_size = candidates[candidates["params_b"] == largest]
        notes.append("size")
    if method and "method" in same_size and same_size["method"].isin(METHODS).any():
        preference = [method] + [m for m in METHODS if m != method]
        for choice in preference:
            hit = same_size[same_size["method"] == choice]
            if not hit.empty:
                if choice != method:
                    notes.append("method")
                return hit.iloc[0], notes
    return same_size.iloc[0], notes


def _value(row: pd.Series) -> float:
    return float(row["value"]) * 100 if pd.notna(row["value"]) else np.nan


def _baseline_of(metrics: pd.DataFrame, run: pd.Series, metric: str) -> pd.Series | None:
    hit = metrics[
        (metrics["task"] == run["task"])
        & (metrics["model"] == run["model"])
        & (metrics["stage"] == "baseline")
        & (metrics["variant"] == "default")
        & (metrics["metric"] == metric)
    ]
    return hit.iloc[0] if not hit.empty else None


def _finetuned_of(metrics: pd.DataFrame, run: pd.Series, metric: str) -> pd.Series | None:
    hit = metrics[
        (metrics["task"] == run["task"])
        & (metrics["model"] == run["model"])
        & (metrics["stage"] == "finetuned")
        & (metrics["method"] == run["method"])
        & (metrics["format"] == run["format"])
        & (metrics["metric"] == metric)
    ]
    return hit.iloc[0] if not hit.empty else None


def _measure(metrics: pd.DataFrame, figure: pd.Series) -> tuple[pd.Series | None, float, list[str]]:
    quantity = figure["quantity"]
    stage = "finetuned" if quantity in ("epoch_tokens", "epoch_minutes", "train_hours", "devices") else figure["stage"]
    pool = metrics[metrics["stage"] == stage]
    if figure["task"]:
        pool = pool[pool["task"] == figure["task"]]
    if stage == "baseline":
        pool = pool[pool["variant"] == "default"]
    else:
        # The studies trained with special tokens; format ablations are compared elsewhere.
        preferred = pool[pool["format"] == "special_tokens"]
        pool = preferred if not preferred.empty else pool
    pool = pool[pool["metric"] == figure["metric"]] if figure["metric"] else pool[pool["primary"]]
    run, notes = _pick(pool, figure["size"], figure["method"])
    if run is None:
        return None, np.nan, notes
    if quantity == "accuracy":
        return run, _value(run), notes
    if quantity == "gain":
        base = _baseline_of(metrics, run, figure["metric"])
        return run, (_value(run) - _value(base)) if base is not None else np.nan, notes
    if quantity == "gain_over_finetuned":
        single = _finetuned_of(metrics, run, figure["metric"])
        return run, (_value(run) - _value(single)) if single is not None else np.nan, notes
    epochs = run["epochs_run"] if pd.notna(run["epochs_run"]) and run["epochs_run"] > 0 else np.nan
    if quantity == "epoch_tokens":
        return run, run["train_tokens"] / epochs / 1e6, notes
    if quantity == "epoch_minutes":
        return run, run["train_wall_time_s"] / epochs / 60, notes
    if quantity == "train_hours":
        return run, run["train_wall_time_s"] / 3600, notes
    if run["device_kind"] != "GPU":
        notes.append("CPU, not GPUs")
    return run, float(run["num_processes"]), notes


def compare(published: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per measurable published figure: the figure, our value, the difference and the match."""
    rows = []
    for _, figure in published.iterrows():
        if figure["quantity"] not in QUANTITIES or figure["stage"] == "reference":
            continue
        run, ours, notes = _measure(metrics, figure)
        rows.append(
            {
                "id": figure["id"],
                "study": figure["study"],
                "task": figure["task"],
                "published_model": figure["model"],
                "metric": figure["metric"],
                "quantity": figure["quantity"],
                "unit": figure["unit"],
                "relation": figure["relation"],
                "published": figure["value"],
                "our_model": run["model"] if run is not None else "",
                "our_size": run["size"] if run is not None else "",
                "our_run": run["run"] if run is not None else "",
                "our_label": labels.short_run(run) if run is not None else "",
                "reproduced": ours,
                "difference": ours - figure["value"] if pd.notna(ours) else np.nan,
                "match": "same setting"
                if run is not None and not notes
                else ", ".join(notes)
                if run is not None
                else "not run",
                "source": figure["source"],
            }
        )
    return pd.DataFrame(rows)
