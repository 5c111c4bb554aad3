"""``tunebench summary``: the last lines of the demo, on contract-shaped results."""

from __future__ import annotations

from test_results_aggregate import write_synthetic

from tunebench import cli
from tunebench.results import aggregate


def test_summary_shows_the_primary_metrics_and_the_paths(demo_config, tmp_path, capsys):
    write_synthetic(demo_config, tmp_path)
    aggregate.write(demo_config, tmp_path, tmp_path / "metrics.csv", tmp_path / "learning_curves.csv")
    assert cli.main(["summary", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "execution_accuracy" in out and "baseline" in out and "lora" in out
    assert "exact_match" not in out and "parse_rate" not in out  # only each task's primary metric
    assert f"paper: {tmp_path / 'paper' / 'tunebench.pdf'}  (missing)" in out
    assert f"metrics: {tmp_path / 'metrics.csv'}" in out and "metrics.csv  (missing)" not in out
