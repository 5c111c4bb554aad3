"""``tunebench bench --quick`` runs every comparison and writes its files (its numbers are not judged here)."""

from __future__ import annotations

import pandas as pd
import pytest

from tunebench import cli
from tunebench.bench import REFERENCES


@pytest.mark.slow
def test_quick_bench_writes_every_comparison(with_mirror, tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--out-dir", str(tmp_path)]) == 0
    for name in ("ceiling", "training", "precision", "generation", "sql", "data", "ratios", "ceiling_share"):
        assert (tmp_path / f"{name}.csv").stat().st_size > 0, name
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")
    ratios = pd.read_csv(tmp_path / "ratios.csv")
    assert set(REFERENCES) <= set(ratios["comparison"])
    references = ratios[ratios["variant"] == ratios["reference"]]
    assert (references["ratio"] == 1.0).all() and len(references) >= len(REFERENCES)
    training = ratios[ratios["comparison"] == "training"]
    assert set(training["variant"]) == {"packing", "pad_to", "pad_to_longest"}
    assert set(training["case"]) == {f"{task} {method}" for task in ("viggo", "gsm8k") for method in ("lora", "full")}
    assert (training["max_loss_difference"].dropna() < 1e-5).all()  # same examples, same per-token losses (float64)
    printed = capsys.readouterr().out
    assert "decoding precision" in printed and f"written to {tmp_path}" in printed


def test_bench_refuses_a_bad_thread_count(capsys):
    assert cli.main(["bench", "--threads", "0"]) == 2
    assert "--threads is 0 but must be at least 1." in capsys.readouterr().err


def test_peer_bench_without_its_extra_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else find(name, *a))
    assert cli.main(["bench", "--peers", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "needs trl; install the bench extra" in err and "Traceback" not in err
