"""``tunebench bench --quick`` runs every comparison and writes its files (its numbers are not judged here)."""

from __future__ import annotations

import pandas as pd
import pytest

from tunebench.commands import cli
from tunebench.machinery import bench_peers
from tunebench.machinery.bench import CPU_CEILING, REFERENCES, ceiling_share, ratios
from tunebench.stages.train import wrap


def test_each_metric_of_a_case_is_set_against_the_reference_in_that_metric():
    rows = [
        ("tunebench", bench_peers.WALL, 30.0, 20.0, 40.0),
        ("trl", bench_peers.WALL, 20.0, 10.0, 25.0),
        ("tunebench", bench_peers.CPU, 12.0, 11.0, 13.0),
        ("trl", bench_peers.CPU, 6.0, 5.5, 6.5),
    ]
    frame = pd.DataFrame(
        [
            {
                "comparison": "peer training",
                "case": "viggo full",
                "variant": v,
                "metric": m,
                "median": x,
                "low": lo,
                "high": hi,
            }
            for v, m, x, lo, hi in rows
        ]
    )
    table = ratios(frame, bench_peers.REFERENCES).set_index(["variant", "metric"])
    assert table.loc[("tunebench", bench_peers.WALL), "ratio"] == 1.5
    assert table.loc[("tunebench", bench_peers.CPU), "ratio"] == 2.0
    assert table.loc[("tunebench", bench_peers.CPU), "ratio_low"] == 11.0 / 6.5  # its low over the peer's high
    assert (table.xs("trl", level="variant")["ratio"] == 1.0).all()


def test_a_training_rate_is_set_against_the_matmul_rate_measured_the_same_way():
    ceiling = [
        ("float32", "GFLOP/s", 120.0),
        ("float32", CPU_CEILING, 60.0),
        ("bfloat16", "GFLOP/s", 2.0),
        ("bfloat16", CPU_CEILING, 1.0),
    ]
    rows = [{"comparison": "ceiling", "case": "matmul", "variant": v, "metric": m, "median": x} for v, m, x in ceiling]
    rows += [
        # 10 tokens/s of a 1e9-parameter model at 6 FLOPs per parameter and token: 60 GFLOP/s.
        {"comparison": "peer training", "case": "c", "variant": "tunebench", "metric": bench_peers.WALL,
         "median": 10.0, "params": 1e9},
        {"comparison": "peer training", "case": "c", "variant": "tunebench", "metric": bench_peers.CPU,
         "median": 5.0, "params": 1e9},
        {"comparison": "compile", "case": "c", "variant": "eager", "metric": bench_peers.CPU, "median": 1.0,
         "params": 1e9},
    ]  # fmt: skip
    share = ceiling_share(pd.DataFrame(rows), ("peer training",)).set_index("metric")
    assert list(share["comparison"].unique()) == ["peer training"]  # only the comparisons asked for
    assert share.loc[bench_peers.WALL, "share_of_float32_ceiling"] == 0.5  # per wall second against per wall second
    assert share.loc[bench_peers.CPU, "share_of_float32_ceiling"] == 0.5  # 30 against 60 per CPU second
    assert share.loc[bench_peers.CPU, "share_of_bf16_ceiling"] == 30.0


@pytest.mark.slow
def test_quick_bench_writes_every_comparison(with_mirror, tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--out-dir", str(tmp_path)]) == 0
    for name in (
        "ceiling",
        "training",
        "precision",
        "optimizer",
        "compile",
        "generation",
        "sql",
        "data",
        "ratios",
        "ceiling_share",
    ):
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
    optimizer = ratios[ratios["comparison"] == "optimizer"]
    assert set(optimizer["variant"]) == {"AdamW fused", "AdamW per-tensor"}
    assert (optimizer["max_weight_difference"] < 1e-5).all()  # the fused kernel updates the weights as the loop does
    compiled = ratios[ratios["comparison"] == "compile"]
    assert set(compiled["variant"]) == {"eager", "compiled layers"} and len(compiled) == 4  # full and LoRA
    assert (compiled["max_loss_difference"] < wrap.COMPILED_LOSS_TOLERANCE).all()
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


@pytest.mark.slow
def test_quick_peer_bench_sets_both_peers_beside_ours(with_mirror, tmp_path, capsys):
    assert cli.main(["bench", "--peers", "--quick", "--out-dir", str(tmp_path)]) == 0
    ratios = pd.read_csv(tmp_path / "peers_ratios.csv")
    training = ratios[ratios["comparison"] == "peer training"]
    assert set(training["variant"]) == {"tunebench", "trl"}
    # LoRA and full, each per second of wall time and of CPU time, every rate positive.
    assert set(training["metric"]) == {bench_peers.WALL, bench_peers.CPU} and len(training) == 8
    assert (training["median"] > 0).all()
    # The same examples in the same order, one packed row a step: the per-token losses agree.
    assert (training["max_loss_difference"] < bench_peers.LOSS_TOLERANCE).all()
    evaluation = ratios[ratios["comparison"] == "peer evaluation"]
    assert set(evaluation["variant"]) == {"tunebench", "tunebench generate", "lm-eval"}
    assert (evaluation["identical_prompts"] == 1.0).all()  # the harness saw our chat prompt, token for token
    assert (ratios.loc[ratios["variant"] == ratios["reference"], "ratio"] == 1.0).all()
    share = pd.read_csv(tmp_path / "peers_ceiling_share.csv")
    assert len(share) == 8 and (share["share_of_float32_ceiling"] > 0).all()  # each side, method and measure
    printed = capsys.readouterr().out
    assert "peer evaluation" in printed and "of the float32 matmul rate" in printed
