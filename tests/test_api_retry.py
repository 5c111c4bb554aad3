"""An endpoint outage, then a rerun of the workflow: the rows whose requests failed are requested again (the
answered ones come from the cache) and the metrics change with them.

The endpoint is a real HTTP server on loopback that speaks the chat-completions protocol (test_api_server's
Recording): during the outage it answers 503 to about half the questions, then it recovers.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from test_api_server import KEY_ENV, Recording, snakemake
from tunebench import config as tb_config

TASK = "multiplication"
METRICS = f"results/eval/{TASK}/stub-api/baseline/metrics.json"


def _odd(body: dict) -> bool:
    """The questions whose text hashes odd: about half, the same ones on every run."""
    return bool(hashlib.sha256(body["messages"][-1]["content"].encode()).digest()[0] % 2)


@pytest.fixture
def endpoint():
    server = Recording("stub", weights="stub", answer="Answer: 0", refuse=_odd)
    yield server
    server.close()


@pytest.mark.slow
def test_rows_that_failed_are_requested_again_on_the_next_run(endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "tb-test-key")
    config = tb_config.read_yaml(tb_config.ROOT / ".test" / "config.yaml")
    config["models"] = {
        "stub-api": {
            "size": "stub",
            "api": {
                "base_url": endpoint.base_url,
                "model": "stub",
                "key_env": KEY_ENV,
                "max_retries": 0,  # the outage outlasts any retry
            },
        }
    }
    config["experiments"] = {"finetune": [], "baselines": [{"task": TASK, "models": ["stub-api"]}]}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    metrics_path = tmp_path / METRICS

    first = snakemake(tmp_path, config_path, METRICS)
    assert first.returncode == 0, first.stderr[-4000:]
    outage = json.loads(metrics_path.read_text())
    failed = outage["api"]["failed_rows"]
    assert 0 < failed < outage["n"] and endpoint.refused == failed  # some rows failed, and the metrics say why
    assert outage["api"]["failures"] == {"http 503": failed} and outage["unscorable"] == failed
    assert outage["metrics"]["accuracy"]["n"] == outage["n"] - failed

    endpoint.refuse = None  # the endpoint recovers
    answered = len(endpoint.bodies)
    second = snakemake(tmp_path, config_path, METRICS)
    assert second.returncode == 0, second.stderr[-4000:]
    recovered = json.loads(metrics_path.read_text())
    assert len(endpoint.bodies) - answered == failed  # exactly the failed rows asked again
    assert recovered["api"]["requests"] == failed and recovered["api"]["cache_hits"] == outage["n"] - failed
    assert recovered["api"]["failed_rows"] == 0 and recovered["unscorable"] == 0
    assert recovered["metrics"]["accuracy"]["n"] == recovered["n"]

    # Once more from the cache alone to record the recovery, and then nothing is left to do.
    third = snakemake(tmp_path, config_path, METRICS)
    assert third.returncode == 0 and len(endpoint.bodies) - answered == failed
    fourth = snakemake(tmp_path, config_path, METRICS)
    assert fourth.returncode == 0 and "Nothing to be done" in fourth.stdout + fourth.stderr
