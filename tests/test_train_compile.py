"""training.compile: compiled decoder layers train as eager ones do, deterministically, and resume."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from train_support import (  # noqa: F401
    read_history,
    tiny_config,
    tokenizer_dir,
    train_in_process,
    write_data,
)
from tunebench.stages.train import wrap


def _losses(out_dir) -> list[float]:
    return [h["loss"] for h in read_history(out_dir) if h["kind"] == "step"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, weights", [("full", "model.safetensors"), ("lora", "adapter_model.safetensors")], ids=["full", "lora"]
)
def test_compiled_layers_match_eager_losses_run_to_run_and_export_the_same_keys(
    tokenizer_dir, tmp_path, method, weights
):
    data = write_data(tmp_path / "data", train=12)
    runs = {}
    for name, compiled in (("eager", False), ("compiled", True), ("again", True)):
        config = tiny_config(tokenizer_dir, training={"compile": compiled}, methods=[method])
        summary = train_in_process(config, method, tmp_path / name / method, data)
        runs[name] = _losses(tmp_path / name / method)
        assert summary["compile"]["compiled"] == ("decoder layers" if compiled else "none")
    assert len(runs["eager"]) == 3
    assert max(abs(a - b) for a, b in zip(runs["compiled"], runs["eager"])) < wrap.COMPILED_LOSS_TOLERANCE
    assert runs["again"] == runs["compiled"]
    compiled_keys = load_file(tmp_path / "compiled" / method / "checkpoint" / weights).keys()
    assert compiled_keys == load_file(tmp_path / "eager" / method / "checkpoint" / weights).keys()
    assert not [key for key in compiled_keys if "_orig_mod" in key]


@pytest.mark.slow
def test_a_compiled_run_stopped_mid_epoch_resumes_to_the_uninterrupted_result(tokenizer_dir, tmp_path, monkeypatch):
    from tunebench.stages.train import loop

    config = tiny_config(
        tokenizer_dir, training={"compile": True, "epochs": 2, "checkpoint_every_steps": 1}, methods=["lora"]
    )
    data = write_data(tmp_path / "data", train=12)
    straight = tmp_path / "straight" / "lora"
    train_in_process(config, "lora", straight, data)

    stopped = tmp_path / "stopped" / "lora"
    step = loop.Trainer.step
    calls = []

    def stop_in_epoch_two(self, batches, index):
        calls.append(index)
        if len(calls) == 5:  # three steps an epoch: the second step of epoch 2
            raise KeyboardInterrupt
        return step(self, batches, index)

    monkeypatch.setattr(loop.Trainer, "step", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_in_process(config, "lora", stopped, data)
    monkeypatch.setattr(loop.Trainer, "step", step)
    train_in_process(config, "lora", stopped, data)

    timing = ("tokens_per_s", "wall_time_s", "peak_memory_mb")
    assert [{k: v for k, v in h.items() if k not in timing} for h in read_history(stopped)] == [
        {k: v for k, v in h.items() if k not in timing} for h in read_history(straight)
    ]
    ours = load_file(stopped / "checkpoint" / "adapter_model.safetensors")
    theirs = load_file(straight / "checkpoint" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    assert json.loads((stopped / "run.json").read_text())["compile"]["compiled"] == "decoder layers"
