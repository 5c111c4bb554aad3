"""Claims decided by paired bootstrap: synthetic prediction files whose paired difference is known."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from tunebench import config as tb_config
from tunebench import tasks
from tunebench.commands import cli
from tunebench.results import aggregate, claims, paper, plan, tables
from tunebench.util import stats
from tunebench.util.errors import DataError

MODEL = "smollm2-135m"
METRIC = "attributes_ordered_accuracy"


def claim(claim_id: str) -> dict:
    return next(c for c in claims.load_claims() if c["id"] == claim_id)


def write_predictions(results: Path, task: str, run: str, correct: list[bool | None], metric: str = METRIC) -> None:
    path = results / "eval" / task / MODEL / run / "predictions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for i, verdict in enumerate(correct):
            handle.write(json.dumps({"id": f"{task}-test-{i:05d}", "verdict": {metric: verdict}}) + "\n")


def test_paired_bootstrap_of_a_known_difference():
    # 50 of 200 rows right only in the first run, none only in the second: the difference is exactly 0.25.
    better = [1.0] * 150 + [0.0] * 50
    than = [1.0] * 100 + [0.0] * 100
    difference, low, high = stats.paired_bootstrap(better, than, samples=2000, seed=1)
    assert difference == pytest.approx(0.25)
    # The per-row differences are 0/1 with mean 0.25: the binomial standard error is 0.0306.
    assert 0.25 - 2.3 * 0.0306 < low < 0.25 - 1.6 * 0.0306
    assert 0.25 + 1.6 * 0.0306 < high < 0.25 + 2.3 * 0.0306
    assert stats.paired_bootstrap([], []) == (None, None, None)
    with pytest.raises(ValueError, match="one entry per row"):
        stats.paired_bootstrap([1.0], [1.0, 0.0])


def test_pairing_is_narrower_than_two_marginal_intervals():
    """Runs that fail on the same hard rows: the marginal intervals overlap, the paired one excludes zero."""
    better = [1.0] * 60 + [1.0] * 12 + [0.0] * 28
    than = [1.0] * 60 + [0.0] * 12 + [0.0] * 28
    _, paired_low, _ = stats.paired_bootstrap(better, than, seed=3)
    better_low, _ = stats.bootstrap_ci(better, seed=3)
    _, than_high = stats.bootstrap_ci(than, seed=3)
    assert paired_low > 0 and better_low < than_high


@pytest.mark.parametrize(
    ("fine_tuned", "prompted", "verdict"),
    [
        ([True] * 150 + [False] * 50, [True] * 100 + [False] * 100, "reproduced"),
        ([True] * 100 + [False] * 100, [True] * 150 + [False] * 50, "contradicted"),
        ([True, False] * 100, [False, True] * 100, "undecided"),
    ],
)
def test_a_claim_is_labelled_from_its_paired_interval(demo_config, tmp_path, fine_tuned, prompted, verdict):
    write_predictions(tmp_path, "viggo", "lora", fine_tuned)
    write_predictions(tmp_path, "viggo", "baseline", prompted)
    config = copy.deepcopy(demo_config.config)
    config["experiments"]["finetune"] = [{"task": "viggo", "models": [MODEL], "methods": ["lora"]}]
    config = tb_config.validate(config)
    frame = claims.decide(config, tmp_path, [claim("viggo_finetuned_beats_prompted")])
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["better_run"], row["than_run"], row["n"], row["label"]) == ("lora", "baseline", 200, verdict)
    expected = (sum(fine_tuned) - sum(prompted)) / 200
    assert row["difference"] == pytest.approx(expected)
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]


def test_seed_replicates_widen_their_runs_row_and_are_not_paired_themselves(demo_config, tmp_path):
    write_predictions(tmp_path, "viggo", "baseline", [False] * 10)
    write_predictions(tmp_path, "viggo", "lora", [True] * 6 + [False] * 4)
    write_predictions(tmp_path, "viggo", "lora-seed1", [True] * 3 + [False] * 7)
    write_predictions(tmp_path, "viggo", "lora-seed2", [True] * 8 + [False] * 2)
    config = copy.deepcopy(demo_config.config)
    config["experiments"]["finetune"] = [{"task": "viggo", "models": [MODEL], "methods": ["lora"], "seeds": [1, 2]}]
    config = tb_config.validate(config)
    frame = claims.decide(config, tmp_path, [claim("viggo_finetuned_beats_prompted")])
    assert frame["better_run"].tolist() == ["lora"]  # the replicates add no rows of their own
    row = frame.iloc[0]
    assert (row["difference"], row["seeds"], row["seed_low"], row["seed_high"]) == (0.6, 3, 0.3, 0.8)
    table = tables.claims_table(frame, known=tasks.BUILT_IN)
    assert table.text()["Over seeds"].tolist() == ["3: +30.0 to +80.0"]
    assert table.csv_frame()[["seeds", "seed_low", "seed_high"]].values.tolist() == [[3, 30.0, 80.0]]
    assert "trained with 3 seeds: its difference ranges from 30.0 to 80.0 points over seeds" in paper.seeds_tex(
        frame, tasks.BUILT_IN
    )


def test_rows_either_run_could_not_score_are_left_out(demo_config, tmp_path):
    write_predictions(tmp_path, "viggo", "lora", [True, True, None, True])
    write_predictions(tmp_path, "viggo", "baseline", [False, None, False, False])
    config = copy.deepcopy(demo_config.config)
    config["experiments"]["finetune"] = [{"task": "viggo", "models": [MODEL], "methods": ["lora"]}]
    config = tb_config.validate(config)
    row = claims.decide(config, tmp_path, [claim("viggo_finetuned_beats_prompted")]).iloc[0]
    assert (row["n"], row["difference"]) == (2, 1.0)


def test_a_claim_without_its_runs_is_not_run_not_undecided(demo_config, tmp_path):
    config = copy.deepcopy(demo_config.config)
    config["experiments"]["finetune"] = [
        entry for entry in config["experiments"]["finetune"] if entry.get("format") != "instruction"
    ]
    frame = claims.decide(tb_config.validate(config), tmp_path, [claim("special_tokens_beat_instruction")])
    assert frame["label"].tolist() == ["not run"] and frame["n"].isna().all()
    assert claims.counts(frame) == {"reproduced": 0, "contradicted": 0, "undecided": 0, "not run": 1}


def test_the_demo_decides_every_claim_with_the_runs_it_makes(demo_config):
    runs = claims.evaluated_runs(demo_config)
    compared = {
        c["id"]: [(b["run"], t["run"], b["task"]) for b, t, _ in claims.pairs(c, runs, demo_config.tasks)]
        for c in claims.load_claims()
    }
    assert compared["multiplication_finetuned_beats_prompted"] == [
        (method, baseline, "multiplication")
        for method in ("lora", "full", "qlora")
        for baseline in ("baseline", "baseline-stepwise")
    ]
    assert compared["gsm8k_two_stage_beats_one_stage"] == [("lora-two_stage", "lora", "gsm8k")]
    assert compared["special_tokens_beat_instruction"] == [("lora", "lora-instruction", "viggo")]
    assert ("full", "lora", "viggo") in compared["full_beats_lora"]
    assert "claims" in plan(demo_config).tables and "claims" in plan(demo_config).figures


def share_of(run: dict) -> float:
    """A success rate per kind of run, ordered the way every claim says: each claim then holds."""
    if run["stage"] == "baseline":
        return 0.1
    if run["stage"] == "two_stage":
        return 0.9
    if run["format"] == "instruction":
        return 0.2
    return {"qlora": 0.3, "lora": 0.5, "full": 0.7}[run["method"]]


def test_claims_command_and_table(demo_config, tmp_path, capsys):
    config_path = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
    rows = 100
    for run in claims.evaluated_runs(demo_config):
        metrics = tasks.get(run["task"]).metrics
        path = tmp_path / "eval" / run["task"] / MODEL / run["run"] / "predictions.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join(
                json.dumps({"id": f"row-{i}", "verdict": {m: i < share_of(run) * rows for m in metrics}}) + "\n"
                for i in range(rows)
            )
        )
    assert (
        cli.main(
            ["claims", "--config", str(config_path), "--results", str(tmp_path), "--out", str(tmp_path / "claims.csv")]
        )
        == 0
    )
    assert "0 contradicted, 0 undecided, 0 not run" in capsys.readouterr().out
    frame = claims.read(tmp_path / "claims.csv")
    assert set(frame["label"]) == {"reproduced"} and (frame["n"] == rows).all()
    runs = {(r["task"], r["run"]): r for r in claims.evaluated_runs(demo_config)}
    for _, row in frame.iterrows():
        expected = share_of(runs[(row["task"], row["better_run"])]) - share_of(runs[(row["task"], row["than_run"])])
        assert row["difference"] == pytest.approx(expected)
    table = tables.claims_table(frame, known=tasks.BUILT_IN)
    assert len(table.text()) == len(frame)
    assert table.text().iloc[0, 4].startswith(f"+{(frame['difference'].iloc[0] * 100):.1f} [")
    assert list(table.csv_frame().columns[:10]) == [
        "claim",
        "task",
        "metric",
        "model",
        "size",
        "better_run",
        "than_run",
        "n",
        "label",
        "published",
    ]


def test_a_broken_prediction_line_is_one_sentence(demo_config, tmp_path):
    write_predictions(tmp_path, "viggo", "lora", [True])
    path = tmp_path / "eval" / "viggo" / MODEL / "baseline" / "predictions.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"id": "viggo-test-00000", "verdict": {}}\n')
    config = copy.deepcopy(demo_config.config)
    config["experiments"]["finetune"] = [{"task": "viggo", "models": [MODEL], "methods": ["lora"]}]
    config = tb_config.validate(config)
    with pytest.raises(
        DataError, match=r"line 1 is not a prediction record with a verdict for attributes_ordered_accuracy;"
    ):
        claims.decide(config, tmp_path, [claim("viggo_finetuned_beats_prompted")])


def test_a_seed_replicate_is_named_by_its_seed_and_its_first_run_is_not():
    from tunebench.results import labels

    lora = {"stage": "finetuned", "method": "lora", "format": "special_tokens", "task": "viggo"}
    assert labels.run(pd.Series({**lora, "replicate_of": "lora", "seed": 1.0}), tasks.BUILT_IN) == "LoRA, seed 1"
    assert labels.run(pd.Series({**lora, "replicate_of": float("nan"), "seed": 42.0}), tasks.BUILT_IN) == "LoRA"
    assert labels.run(lora, tasks.BUILT_IN) == "LoRA"  # configs without replicates have no seed columns at all


def test_a_comparison_the_config_declares_is_decided_and_tabled_like_a_claim(tmp_path, capsys):
    from test_custom_task import base_config, declared, ticket_rows

    source = tmp_path / "tickets.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in ticket_rows(20)))
    config = base_config(declared(source))
    config["models"]["remote"] = {"size": "API", "api": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    config["experiments"]["baselines"] = [{"task": "tickets", "models": ["remote"]}]
    config["comparisons"] = [
        {
            "id": "lora_beats_api",
            "statement": "LoRA beats the API baseline on tickets",
            "task": "tickets",
            "better": {"stage": "finetuned", "method": "lora", "model": "tiny"},
            "than": {"stage": "baseline", "model": "remote"},
        },
        {
            "id": "qlora_beats_api",
            "statement": "QLoRA beats the API baseline on tickets",
            "task": "tickets",
            "better": {"method": "qlora"},
            "than": {"model": "remote"},
        },
    ]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    results = tmp_path / "results"
    for model, run, correct in (("tiny", "lora", 150), ("remote", "baseline", 100)):
        path = results / "eval" / "tickets" / model / run / "predictions.jsonl"
        path.parent.mkdir(parents=True)
        rows = [{"id": f"t-{i}", "verdict": {"fields_exact": i < correct}} for i in range(200)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    loaded = tb_config.load(config_path)
    chosen = plan(loaded)
    assert "comparisons" in chosen.tables and "claims" not in chosen.tables
    assert "published" not in chosen.tables  # no task of the studies runs here
    assert claims.prediction_files(loaded) == [
        "results/eval/tickets/remote/baseline/predictions.jsonl",
        "results/eval/tickets/tiny/lora/predictions.jsonl",
    ]
    out = results / "claims.csv"
    assert cli.main(["claims", "--config", str(config_path), "--results", str(results), "--out", str(out)]) == 0
    decided = claims.comparisons(claims.read(out))
    assert claims.studies(claims.read(out))["label"].eq("not run").all()
    row = decided.iloc[0]
    assert (row["claim"], row["model"], row["better_run"], row["than_model"], row["than_run"], row["n"]) == (
        "lora_beats_api",
        "tiny",
        "lora",
        "remote",
        "baseline",
        200,
    )
    assert row["difference"] == pytest.approx(0.25) and 0 < row["ci_low"] < 0.25 < row["ci_high"]
    assert row["label"] == "reproduced" and decided.iloc[1]["label"] == "not run"

    metrics = results / "metrics.csv"
    pd.DataFrame(columns=aggregate.METRIC_COLUMNS).to_csv(metrics, index=False)  # the table reads no metric
    tables_dir = tmp_path / "tables"
    command = ["tables", "comparisons", "--config", str(config_path), "--metrics", str(metrics)]
    assert cli.main([*command, "--claims", str(out), "--out-dir", str(tables_dir)]) == 0
    markdown = (tables_dir / "comparisons.md").read_text()
    line = next(line for line in markdown.splitlines() if "LoRA beats the API baseline" in line)
    low, high = row["ci_low"] * 100, row["ci_high"] * 100
    assert (
        f"+25.0 [{low:+.1f}, {high:+.1f}]" in line and "reproduced" in line and "tiny lora vs remote baseline" in line
    )
    assert "The comparisons this config declares" in markdown
