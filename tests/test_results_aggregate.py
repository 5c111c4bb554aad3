"""Aggregation of evaluation and training records into results/metrics.csv and learning_curves.csv.

``write_synthetic`` writes records that follow the evaluation and training contracts for every run of
a configuration (seeded, so the numbers are known); the other results tests build on it.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest

from tunebench import config as tb_config
from tunebench import tasks as tb_tasks
from tunebench.config import digests as tb_digests
from tunebench.results import aggregate, plan
from tunebench.stages import score as scoring
from tunebench.util.errors import DataError

REPO = tb_config.ROOT


def _interval(value: float, n: int) -> tuple[float, float]:
    half = 1.96 * math.sqrt(max(value * (1 - value), 0.01) / n)
    return max(0.0, value - half), min(1.0, value + half)


def _metrics_doc(run, stage, values: dict, n: int, prompt_tokens: float, fmt: str, variant: str | None) -> dict:
    metrics = {}
    for name, value in values.items():
        low, high = _interval(value, n)
        metrics[name] = {"value": value, "ci_low": low, "ci_high": high, "n": n}
    return {
        "task": run.task,
        "model": run.model,
        "run": run.run,
        "method": getattr(run, "method", None),
        "stage": stage,
        "format": fmt,
        "variant": variant,
        "n": n,
        "unscorable": 0,
        "metrics": metrics,
        "prompt_tokens_mean": prompt_tokens,
        "generated_tokens_mean": 40.0,
        "wall_time_s": 120.0,
        "tokens_per_s": 55.0,
        "batch_size": 16,
    }


def write_synthetic(config: tb_config.Experiment, results: Path, seed: int = 0) -> None:
    """Contract-shaped metrics.json, run.json, best.json and history.jsonl for every run of ``config``."""
    rng = random.Random(seed)
    baseline_values = {}
    for run in config.baselines:
        task = config.tasks.get(run.task)
        values = {m: round(rng.uniform(0.05, 0.45), 4) for m in task.metrics}
        baseline_values.setdefault((run.task, run.model), values)
        n = (config["tasks"].get(run.task, {}).get("limit") or {}).get("test") or 100
        doc = _metrics_doc(run, "baseline", values, n, rng.uniform(600, 1200), "chat", run.variant)
        doc[tb_digests.KEY] = tb_digests.score_hash(config, run.task, run.model, run.run)
        doc["code"] = scoring.code_record(config.tasks.get(run.task))
        folder = results / "eval" / run.task / run.model / run.run
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(doc))
        write_predictions(folder, run.task, values, n)
    finetuned_values = {}
    for run in config.finetune:
        epochs = run.training["epochs"]
        folder = results / "train" / run.task / run.model / run.run
        folder.mkdir(parents=True, exist_ok=True)
        perplexities = [
            round(1.5 + 6.0 / (1 + e) + rng.uniform(0, 0.3) + (0.8 if e == epochs else 0), 4)
            for e in range(1, epochs + 1)
        ]
        best = min(range(epochs), key=perplexities.__getitem__)
        lines = []
        for e in range(1, epochs + 1):
            lines += [
                {"kind": "step", "epoch": e, "step": e * 10 + s, "loss": 2.0 / e, "lr": 1e-4, "tokens_per_s": 400.0 + s}
                for s in range(2)
            ]
            lines.append(
                {
                    "kind": "epoch",
                    "epoch": e,
                    "train_loss": 2.0 / e,
                    "validation_loss": math.log(perplexities[e - 1]),
                    "validation_perplexity": perplexities[e - 1],
                    "wall_time_s": 100.0 * e,
                }
            )
        (folder / "history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        (folder / "best.json").write_text(
            json.dumps(
                {
                    "epoch": best + 1,
                    "validation_perplexity": perplexities[best],
                    "validation_loss": math.log(perplexities[best]),
                    "checkpoint": "checkpoint",
                }
            )
        )
        processes = config.resources("train", run.model, run.method)["processes"]
        (folder / "run.json").write_text(
            json.dumps(
                {
                    "task": run.task,
                    "model": run.model,
                    "method": run.method,
                    "run": run.run,
                    "format": run.format,
                    "stage": run.stage,
                    "train_tokens": 120_000 * epochs,
                    "wall_time_s": rng.uniform(300, 1500),
                    "cpu_time_s": rng.uniform(200, 900),
                    "peak_memory_mb": 3000.0,
                    "device": "cpu",
                    "num_processes": processes,
                    "epochs_run": epochs,
                    "trainable_params": 1_000_000,
                    "total_params": 135_000_000,
                    tb_digests.KEY: tb_digests.train_hash(config, run.task, run.model, run.run),
                }
            )
        )
        if not run.evaluate:
            continue
        task = config.tasks.get(run.task)
        base = baseline_values.get((run.task, run.model), {m: 0.1 for m in task.metrics})
        values = {m: round(min(0.98, v + rng.uniform(0.2, 0.5)), 4) for m, v in base.items()}
        if run.init_from:
            values = {
                m: round(min(0.99, v + 0.05), 4) for m, v in finetuned_values[(run.task, run.model, run.method)].items()
            }
        finetuned_values.setdefault((run.task, run.model, run.method), values)
        n = (config["tasks"].get(run.task, {}).get("limit") or {}).get("test") or 100
        doc = _metrics_doc(run, run.stage, values, n, rng.uniform(40, 120), run.format, None)
        doc[tb_digests.KEY] = tb_digests.score_hash(config, run.task, run.model, run.run)
        doc["code"] = scoring.code_record(config.tasks.get(run.task))
        folder = results / "eval" / run.task / run.model / run.run
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(doc))
        write_predictions(folder, run.task, values, n)


def write_predictions(folder: Path, task: str, values: dict, n: int) -> None:
    """predictions.jsonl whose verdicts average to ``values`` (rounded to whole rows), as the claims read them."""
    lines = [
        {"id": f"{task}-test-{i:05d}", "verdict": {m: i < round(v * n) for m, v in values.items()}} for i in range(n)
    ]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_one_row_per_run_and_metric_with_run_facts(demo_config, tmp_path):
    write_synthetic(demo_config, tmp_path)
    metrics, curves = aggregate.write(demo_config, tmp_path, tmp_path / "metrics.csv", tmp_path / "curves.csv")
    expected = sum(len(tb_tasks.get(r.task).metrics) for r in demo_config.baselines)
    expected += sum(len(tb_tasks.get(r.task).metrics) for r in demo_config.finetune if r.evaluate)
    assert len(metrics) == expected
    assert not metrics.duplicated(["task", "model", "size", "method", "stage", "run", "metric"]).any()
    assert set(metrics["stage"]) == {"baseline", "finetuned", "two_stage"}

    viggo_lora = metrics[(metrics["task"] == "viggo") & (metrics["run"] == "lora")]
    doc = json.loads((tmp_path / "eval/viggo/smollm2-135m/lora/metrics.json").read_text())
    assert list(viggo_lora["metric"]) == list(tb_tasks.get("viggo").metrics)
    assert viggo_lora.set_index("metric")["value"].to_dict() == {k: v["value"] for k, v in doc["metrics"].items()}
    record = json.loads((tmp_path / "train/viggo/smollm2-135m/lora/run.json").read_text())
    row = viggo_lora.iloc[0]
    assert row["train_tokens"] == record["train_tokens"]
    assert row["size"] == "135M" and row["params_b"] == 0.135
    # A CPU job's device hours are the CPU time its processes used, whatever cores it was granted; wall time beside.
    assert row["device_kind"] == "CPU"
    assert row["device_hours"] == pytest.approx(record["cpu_time_s"] / 3600)
    assert row["train_wall_time_s"] == record["wall_time_s"] and row["train_cpu_time_s"] == record["cpu_time_s"]
    assert row["train_tokens_per_s"] == pytest.approx(400.5)
    assert row["prompt_tokens_mean"] == doc["prompt_tokens_mean"]
    assert viggo_lora["primary"].sum() == 1

    two_stage = metrics[metrics["stage"] == "two_stage"].iloc[0]
    first = json.loads((tmp_path / "train/mathqa/smollm2-135m/lora/run.json").read_text())
    own = json.loads((tmp_path / "train/gsm8k/smollm2-135m/lora-two_stage/run.json").read_text())
    assert two_stage["init_from"] == "mathqa/lora"
    assert two_stage["train_tokens_total"] == first["train_tokens"] + own["train_tokens"]

    stepwise = metrics[metrics["run"] == "baseline-stepwise"]
    assert list(stepwise["variant"].unique()) == ["stepwise"] and list(stepwise["method"].unique()) == ["prompted"]

    # The CSV reads back to the same table.
    again = aggregate.read_metrics(tmp_path / "metrics.csv")
    pd.testing.assert_frame_equal(
        again[["task", "run", "metric", "value", "primary"]].reset_index(drop=True),
        metrics[["task", "run", "metric", "value", "primary"]].reset_index(drop=True),
        check_dtype=False,
    )

    runs = {(r.task, r.run) for r in demo_config.finetune}
    assert set(zip(curves["task"], curves["run"])) == runs
    selected = curves[curves["selected"]]
    assert len(selected) == len(runs)
    best = json.loads((tmp_path / "train/viggo/smollm2-135m/lora/best.json").read_text())
    assert selected[(selected["task"] == "viggo") & (selected["run"] == "lora")]["epoch"].item() == best["epoch"]


def test_rows_are_ordered_by_task_size_stage_and_method(paper_config, tmp_path):
    write_synthetic(paper_config, tmp_path, seed=3)
    metrics = aggregate.collect_metrics(paper_config, tmp_path)
    viggo = metrics[(metrics["task"] == "viggo") & metrics["primary"]]
    assert list(viggo["size"].drop_duplicates()) == ["7B", "13B", "70B"]
    seven = viggo[viggo["size"] == "7B"]
    assert list(seven["run"]) == ["baseline", "full", "lora", "lora-instruction", "qlora"]
    assert list(metrics["task"].drop_duplicates()) == ["viggo", "sql", "gsm8k", "multiplication"]


def test_the_plan_names_outputs_from_the_config_alone(demo_config, paper_config):
    demo = plan(demo_config)
    assert demo.tasks == ("viggo", "sql", "gsm8k", "multiplication")
    assert demo.ablations == ("viggo",) and demo.two_stage == ("gsm8k",)
    assert "ablation_format_viggo" in demo.tables and "two_stage_gsm8k" in demo.figures
    assert set(plan(paper_config).tables) == set(demo.tables)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda doc: doc["metrics"]["accuracy"].update(value=58.0), "must be a fraction between 0 and 1"),
        (lambda doc: doc["metrics"]["accuracy"].update(value="high"), "must be a finite number"),
        (lambda doc: doc.update(run="lora"), "lies in the directory of 'baseline'"),
        (lambda doc: doc.pop("metrics"), "has no metrics object"),
    ],
)
def test_a_damaged_metrics_file_is_named(demo_config, tmp_path, damage, message):
    write_synthetic(demo_config, tmp_path)
    path = tmp_path / "eval/multiplication/smollm2-135m/baseline/metrics.json"
    doc = json.loads(path.read_text())
    damage(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=message) as caught:
        aggregate.collect_metrics(demo_config, tmp_path)
    assert str(path) in str(caught.value)


def test_missing_and_broken_records_are_named(demo_config, tmp_path):
    write_synthetic(demo_config, tmp_path)
    history = tmp_path / "train/viggo/smollm2-135m/full/history.jsonl"
    intact = history.read_text()
    history.write_text(intact + "{not json\n")
    with pytest.raises(DataError, match=r"history.jsonl line \d+ is not valid JSON"):
        aggregate.collect_curves(demo_config, tmp_path)
    history.write_text(intact)
    (tmp_path / "eval/sql/smollm2-135m/lora/metrics.json").unlink()
    with pytest.raises(DataError, match="metrics.json is missing; run the evaluate step"):
        aggregate.collect_metrics(demo_config, tmp_path)


def test_a_foreign_csv_is_refused_with_its_columns(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("task,value\nviggo,0.5\n")
    with pytest.raises(DataError, match="lacks the columns model, size"):
        aggregate.read_metrics(path)


def test_outputs_made_under_other_settings_are_not_mixed(demo_config, tmp_path):
    """A config edit after the runs (here tasks.viggo.limit.train) makes every viggo record stale: the
    results stage refuses them in one sentence instead of tabulating them next to current ones."""
    write_synthetic(demo_config, tmp_path)
    aggregate.collect_metrics(demo_config, tmp_path)  # consistent: accepted
    edited = tb_config.validate(json.loads(json.dumps(demo_config.config)))
    edited["tasks"]["viggo"]["limit"]["train"] -= 1
    with pytest.raises(DataError) as caught:
        aggregate.collect_metrics(edited, tmp_path)
    message = str(caught.value)
    assert "/viggo/" in message and "was made under settings" in message and "\n" not in message
    # a record without any settings record (an older tunebench) is refused too
    path = tmp_path / "eval/multiplication/smollm2-135m/baseline/metrics.json"
    doc = json.loads(path.read_text())
    doc.pop(tb_digests.KEY)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="was made without a settings record"):
        aggregate.collect_metrics(demo_config, tmp_path)


def test_outputs_of_other_code_are_refused(demo_config, tmp_path):
    """A metrics.json scored by another scorer's source (its recorded hash) is refused in one sentence, as
    one made under other settings is: a table never mixes verdicts of old and new code."""
    write_synthetic(demo_config, tmp_path)
    path = tmp_path / "eval/viggo/smollm2-135m/baseline/metrics.json"
    doc = json.loads(path.read_text())
    doc["code"]["score"] = "0123456789abcdef"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as caught:
        aggregate.collect_metrics(demo_config, tmp_path)
    message = str(caught.value)
    assert str(path) in message and "was made by other score code" in message and "\n" not in message


def test_an_integer_over_the_digit_limit_is_named_not_a_traceback(demo_config, tmp_path):
    write_synthetic(demo_config, tmp_path)
    path = tmp_path / "eval/multiplication/smollm2-135m/baseline/metrics.json"
    path.write_text(path.read_text()[:-1] + ', "huge": ' + "9" * 5000 + "}")
    with pytest.raises(DataError, match="holds a number too long to read") as caught:
        aggregate.collect_metrics(demo_config, tmp_path)
    assert str(path) in str(caught.value)
    history = tmp_path / "train/viggo/smollm2-135m/full/history.jsonl"
    history.write_text(history.read_text() + '{"kind": "step", "step": ' + "1" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"history.jsonl line \d+ is not valid JSON or holds a number too long"):
        aggregate.collect_curves(demo_config, tmp_path)
