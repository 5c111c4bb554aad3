"""Prompted baselines through an OpenAI-compatible chat endpoint (a model entry's ``api`` section).

Every request carries the entry's generation parameters (greedy by default, the config's seed where the
server honours one, plus ``extra_body`` for the server's own knobs, whose defaults otherwise apply), is
bounded in concurrency by ``max_concurrency``, limited to ``timeout_s`` and retried with exponential
backoff on 429, 5xx, time-outs and dropped connections. Answers are cached on disk, one file per request,
named by a hash of (endpoint, model, the server's identity, messages, parameters): the identity is what
``GET /models`` reports for the model plus the entry's declared ``revision``, so other weights served
under the same name are asked again. A rerun sends no completion and reads the same text and the
latency measured when the answer was first received.

The key comes from the environment variable ``key_env`` only. It is handed to the client and to no
other code: no log line, cache file, record or error message holds it, and a failed request is
recorded by its kind (``http 429``, ``timeout``, ``connection``, ``refused``), never by the server's
text. A row whose request failed keeps its failure in ``predictions.jsonl`` and is unscorable (its
verdicts are ``null``), so a failing endpoint is reported, never scored as wrong answers.

The ``openai`` client is used because the serving extra of transformers (the local server the tests
start) already requires it, and it speaks every OpenAI-compatible server; its own retries are
switched off so that the retry policy and the count of retries are this module's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..util.errors import ConfigError
from ..util.fileio import write_atomic

#: Where answers are cached when the command is given no other directory.
DEFAULT_CACHE = Path("results", "api_cache")
#: Longest pause between two tries of one request, in seconds.
MAX_BACKOFF_S = 30.0
#: The OpenAI request fields an ``api`` entry may set.
GENERATION_KEYS = ("temperature", "top_p", "max_tokens", "stop", "seed")


@dataclass(frozen=True)
class Endpoint:
    """The validated ``api`` section of one model entry."""

    model_name: str  # the entry's name under ``models``, for messages
    base_url: str
    model: str
    key_env: str
    max_concurrency: int
    timeout_s: float
    max_retries: int
    backoff_s: float
    input_price_per_mtok: float | None
    output_price_per_mtok: float | None
    generation: Mapping[str, Any] = field(default_factory=dict)  # temperature, top_p, max_tokens, stop, seed
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    revision: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], model_name: str) -> Endpoint:
        section = config["models"][model_name]["api"]
        return cls(
            model_name=model_name,
            base_url=section["base_url"].rstrip("/"),
            model=section["model"],
            key_env=section["key_env"],
            max_concurrency=section["max_concurrency"],
            timeout_s=section["timeout_s"],
            max_retries=section["max_retries"],
            backoff_s=section["backoff_s"],
            input_price_per_mtok=section["input_price_per_mtok"],
            output_price_per_mtok=section["output_price_per_mtok"],
            generation={key: section[key] for key in GENERATION_KEYS},
            extra_body=dict(section["extra_body"]),
            revision=section["revision"],
        )

    def key(self) -> str:
        """The key from its environment variable; a missing one is a one-sentence error naming the variable."""
        value = os.environ.get(self.key_env)
        if not value:
            raise ConfigError(
                f"models.{self.model_name}.api.key_env names the environment variable {self.key_env}, which is "
                "not set; export it with the endpoint's key (any non-empty text for a server without keys)."
            )
        return value

    def cost_per_1k_queries(self, prompt_tokens_mean: float, generated_tokens_mean: float) -> float | None:
        """Dollars per 1,000 test queries at the configured prices (None when a price is not given)."""
        if self.input_price_per_mtok is None or self.output_price_per_mtok is None:
            return None
        per_query = prompt_tokens_mean * self.input_price_per_mtok + generated_tokens_mean * self.output_price_per_mtok
        return round(per_query / 1e6 * 1000, 6)


@dataclass
class Answer:
    """One row's outcome: the text and token counts, or the kind of failure."""

    text: str
    prompt_tokens: int
    generated_tokens: int
    stopped: str  # end_token, length, or failed
    error: str | None = None  # http 429, http 500, timeout, connection, refused, empty; None when answered
    cached: bool = False
    latency_s: float | None = None  # of the request that answered, measured when it was first sent


@dataclass
class Tally:
    """What the endpoint was asked: requests sent (retries included), cache hits, retries, failures by kind."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    in_flight: int = 0
    most_in_flight: int = 0

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "retries": self.retries,
            "failed_rows": sum(self.failures.values()),
            "failures": dict(sorted(self.failures.items())),
            "most_in_flight": self.most_in_flight,
        }


def request_params(endpoint: Endpoint, max_tokens: int, seed: int) -> dict:
    """The fields of every request: the entry's generation parameters, the task's limit and the config's
    seed where the entry names none, and its ``extra_body`` (the client merges it into the request)."""
    generation = endpoint.generation
    params = {
        "temperature": generation["temperature"],
        "seed": seed if generation["seed"] is None else generation["seed"],
        "max_tokens": max_tokens if generation["max_tokens"] is None else generation["max_tokens"],
    }
    if generation["top_p"] is not None:
        params["top_p"] = generation["top_p"]
    if generation["stop"]:
        params["stop"] = list(generation["stop"])
    if endpoint.extra_body:
        params["extra_body"] = dict(endpoint.extra_body)
    return params


def server_identity(client, endpoint: Endpoint) -> dict:
    """What the server says it serves under the model's name (its ``GET /models`` entry, or why there is
    none) and the entry's declared revision: the part of the cache key that changes with the weights."""
    try:
        listed = [entry.model_dump(exclude_unset=True) for entry in client.models.list()]
    except Exception as error:  # noqa: BLE001  (any failure means the identity is unknown; its text is not kept)
        reported: Any = f"unreadable: {_retryable(error)[1]}"
    else:
        reported = next((entry for entry in listed if entry.get("id") == endpoint.model), "not listed")
    return {"models_entry": reported, "revision": endpoint.revision}


def cache_key(
    endpoint: Endpoint, messages: Sequence[Mapping[str, str]], params: Mapping[str, Any], server: Mapping[str, Any]
) -> str:
    """The hash that names a request's cache file; the key is not part of it."""
    identity = {
        "base_url": endpoint.base_url,
        "model": endpoint.model,
        "server": dict(server),
        "messages": list(messages),
        "params": dict(params),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


class Cache:
    """Answered requests on disk, ``{dir}/{hash[:2]}/{hash}.json``; failures are never cached."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Answer | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return Answer(
                record["text"],
                record["prompt_tokens"],
                record["generated_tokens"],
                record["stopped"],
                cached=True,
                latency_s=record.get("latency_s"),
            )
        except (ValueError, KeyError, TypeError):  # a damaged entry is asked again and overwritten
            return None

    def put(self, key: str, answer: Answer) -> None:
        record = {
            "text": answer.text,
            "prompt_tokens": answer.prompt_tokens,
            "generated_tokens": answer.generated_tokens,
            "stopped": answer.stopped,
            "latency_s": answer.latency_s,
        }
        write_atomic(self._path(key), (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def retry_param(wildcards) -> str:
    """The generation rule's ``failed_rows`` param: empty, unless the run's generation.json counts rows whose requests
    failed; then a digest of that file, which differs from the value the failing run was started with, so that
    Snakemake runs the job again. Answered rows come from the cache; only the failed ones are requested again.
    The first run after the endpoint recovers runs once more, from the cache alone, to record that it did."""
    path = Path("results", "eval", wildcards.task, wildcards.model, wildcards.run, "generation.json")
    try:
        text = path.read_bytes()
        failed = (json.loads(text).get("api") or {}).get("failed_rows")
    except (OSError, ValueError, AttributeError):
        return ""
    return f"retry {hashlib.sha256(text).hexdigest()[:16]}" if failed else ""


def _client(endpoint: Endpoint):
    from openai import OpenAI

    return OpenAI(base_url=endpoint.base_url, api_key=endpoint.key(), max_retries=0, timeout=endpoint.timeout_s)


def _retryable(error: Exception) -> tuple[bool, str, float | None]:
    """Whether to try again, the failure's kind (never the server's text) and the server's Retry-After."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return True, "timeout", None
    if isinstance(error, openai.APIConnectionError):
        return True, "connection", None
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        retry_after = None
        try:
            retry_after = float(error.response.headers.get("retry-after", ""))
        except (TypeError, ValueError):
            pass
        return status == 429 or status >= 500, f"http {status}", retry_after
    return False, type(error).__name__, None


def _ask(client, endpoint: Endpoint, messages, params, tally: Tally, sleep: Callable[[float], None]) -> Answer:
    """One request with its retries; an :class:`Answer` with ``error`` set when every try failed."""
    kind = "unknown"
    for attempt in range(endpoint.max_retries + 1):
        if attempt:
            with tally.lock:
                tally.retries += 1
        with tally.lock:
            tally.requests += 1
            tally.in_flight += 1
            tally.most_in_flight = max(tally.most_in_flight, tally.in_flight)
        sent = time.perf_counter()
        try:
            response = client.chat.completions.create(model=endpoint.model, messages=list(messages), **params)
        except Exception as error:  # noqa: BLE001  (sorted into retryable kinds below; the text is never kept)
            again, kind, retry_after = _retryable(error)
            if not again or attempt == endpoint.max_retries:
                return Answer("", 0, 0, "failed", error=kind)
            pause = retry_after if retry_after is not None else endpoint.backoff_s * 2**attempt
            # Jitter keeps concurrent retries from arriving together again.
            sleep(min(MAX_BACKOFF_S, pause) * (1 + 0.25 * random.random()))
            continue
        finally:
            with tally.lock:
                tally.in_flight -= 1
        choice = response.choices[0] if response.choices else None
        if choice is None:
            return Answer("", 0, 0, "failed", error="empty")
        message = choice.message
        if getattr(message, "refusal", None) or choice.finish_reason == "content_filter":
            return Answer("", 0, 0, "failed", error="refused")
        usage = response.usage
        return Answer(
            text=message.content or "",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            generated_tokens=getattr(usage, "completion_tokens", 0) or 0,
            stopped="length" if choice.finish_reason == "length" else "end_token",
            latency_s=round(time.perf_counter() - sent, 4),
        )
    return Answer("", 0, 0, "failed", error=kind)


def complete(
    endpoint: Endpoint,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    *,
    max_tokens: int,
    seed: int,
    cache_dir: Path,
    progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Answer], Tally, dict]:
    """An answer per conversation, in order: from the cache, else from the endpoint; and the server's identity."""
    params = request_params(endpoint, max_tokens, seed)
    cache = Cache(cache_dir)
    tally = Tally()
    answers: list[Answer | None] = [None] * len(conversations)
    client = _client(endpoint)
    server = server_identity(client, endpoint)
    keys = [cache_key(endpoint, messages, params, server) for messages in conversations]
    todo = []
    for index, key in enumerate(keys):
        answers[index] = cache.get(key)
        if answers[index] is None:
            todo.append(index)
    tally.cache_hits = len(conversations) - len(todo)
    if todo:
        done = [tally.cache_hits]

        def work(index: int) -> None:
            answer = _ask(client, endpoint, conversations[index], params, tally, sleep)
            if answer.error is None:
                cache.put(keys[index], answer)
            answers[index] = answer
            with tally.lock:
                if answer.error is not None:
                    tally.failures[answer.error] += 1
                done[0] += 1
                if progress:
                    progress(done[0])

        with ThreadPoolExecutor(max_workers=endpoint.max_concurrency) as pool:
            list(pool.map(work, todo))
    return [answer for answer in answers if answer is not None], tally, server
