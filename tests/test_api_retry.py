"""An endpoint outage, then a rerun of the workflow: the rows whose requests failed are requested again (the
answered ones come from the cache) and the metrics change with them.

The endpoint is a real HTTP server on loopback that speaks the chat-completions protocol: while "flaky" it answers
503 to every other question, then it recovers.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from test_api_server import KEY_ENV, snakemake
from tunebench import config as tb_config

TASK = "multiplication"
METRICS = f"results/eval/{TASK}/stub-api/baseline/metrics.json"


class Endpoint(ThreadingHTTPServer):
    """Answers ``Answer: 0`` to every question; while ``flaky``, 503 to the questions whose text hashes odd."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.flaky, self.served, self.refused = True, 0, 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: Endpoint

    def do_POST(self):  # noqa: N802  (the name http.server calls)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        question = json.loads(body)["messages"][-1]["content"]
        with self.server.lock:
            refuse = self.server.flaky and hashlib.sha256(question.encode()).digest()[0] % 2
            self.server.refused += bool(refuse)
            self.server.served += not refuse
        if refuse:
            self.send_response(503)
            self.end_headers()
            return
        answer = {
            "id": "stub",
            "object": "chat.completion",
            "created": 0,
            "model": "stub",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Answer: 0"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23},
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # the test counts requests itself
        pass


@pytest.fixture
def endpoint():
    server = Endpoint()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_rows_that_failed_are_requested_again_on_the_next_run(endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "tb-test-key")
    config = tb_config.read_yaml(tb_config.ROOT / ".test" / "config.yaml")
    config["models"] = {
        "stub-api": {
            "size": "stub",
            "api": {
                "base_url": f"http://127.0.0.1:{endpoint.server_address[1]}/v1",
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

    endpoint.flaky = False
    answered = endpoint.served
    second = snakemake(tmp_path, config_path, METRICS)
    assert second.returncode == 0, second.stderr[-4000:]
    recovered = json.loads(metrics_path.read_text())
    assert endpoint.served - answered == failed  # exactly the failed rows asked again
    assert recovered["api"]["requests"] == failed and recovered["api"]["cache_hits"] == outage["n"] - failed
    assert recovered["api"]["failed_rows"] == 0 and recovered["unscorable"] == 0
    assert recovered["metrics"]["accuracy"]["n"] == recovered["n"]

    # Once more from the cache alone to record the recovery, and then nothing is left to do.
    third = snakemake(tmp_path, config_path, METRICS)
    assert third.returncode == 0 and endpoint.served - answered == failed
    fourth = snakemake(tmp_path, config_path, METRICS)
    assert fourth.returncode == 0 and "Nothing to be done" in fourth.stdout + fourth.stderr
