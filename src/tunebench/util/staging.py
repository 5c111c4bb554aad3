"""Offline staging: every hub model and dataset a config needs, in one hub cache that jobs read offline.

``tunebench fetch`` (and the workflow's local ``fetch`` rule, before any job) downloads each item at
its pinned revision into ``HF_HOME/hub`` with the hub client's own cache layout
(``models--ORG--NAME/{blobs,snapshots/<commit>,refs/<revision>}``); an item already there is
resolved from the cache and nothing is downloaded. Compute jobs then run with ``HF_HUB_OFFLINE=1``
and the same ``HF_HOME``: models load by hub id from the cache, and the data stage reads a hub
dataset from its cached snapshot (:func:`dataset_snapshot`), which ``datasets`` loads as a local
directory with the repository's own configs. A job that finds an item missing names it and the
fetch command in one sentence (:func:`missing`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataUnavailable, UserError

#: The environment variable naming a local dataset mirror, which replaces the hub for the built-in tasks
#: (and wins over the config's data.mirror).
MIRROR_ENV = "TUNEBENCH_DATA_MIRROR"

#: Files of a model repository that loading needs: weights, configs and tokenizer. Repositories
#: often also hold the same weights as .bin/.pth/GGUF (Llama-2-70B: +276 GB), which are not fetched.
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
#: Files of a dataset repository: the card (whose YAML names the configs) and data files.
DATASET_FILES = ["README.md", "*.json", "*.jsonl", "*.csv", "*.parquet", "*.arrow", "*.txt"]
FETCH_COMMAND = "tunebench fetch --config <the workflow's config files>"


class NotStaged(UserError):
    """A hub item the offline cache does not hold; the message says how to stage it."""


@dataclass(frozen=True)
class Item:
    """One hub repository at one revision."""

    repo_type: str  # model or dataset
    repo_id: str
    revision: str | None
    needed_by: str  # the config key that names it

    @property
    def name(self) -> str:
        return f"{self.repo_type} {self.repo_id}@{self.revision or 'main'}"

    @property
    def patterns(self) -> list[str]:
        return MODEL_FILES if self.repo_type == "model" else DATASET_FILES


def offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def hub_cache(hf_home: str | os.PathLike | None = None) -> Path:
    """The hub cache directory: ``HF_HOME/hub`` of the given home, else the hub client's own setting."""
    if hf_home:
        return Path(hf_home).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def missing(item: Item, cache: Path) -> str:
    """The one sentence a job says when ``item`` is not staged."""
    alternative = (
        f", or set data.mirror (or {MIRROR_ENV}) to a local dataset mirror" if item.repo_type == "dataset" else ""
    )
    return (
        f"{item.name} ({item.needed_by}) is not in the hub cache {cache} and HF_HUB_OFFLINE is set; "
        f"stage it where the hub is reachable with `{FETCH_COMMAND}` (same HF_HOME){alternative}."
    )


def items(config: Mapping[str, Any], finetune: list, baselines: list, mirror: Path | None) -> list[Item]:
    """Every hub model and dataset the config's experiments need, each once, in config order.

    ``finetune`` and ``baselines`` are the config's runs and ``mirror`` its dataset mirror, as
    :mod:`tunebench.config` resolves them (passed in: the data stage imports this module, and the
    config imports the data stage's task registry).
    """
    found: dict[tuple, Item] = {}

    def model(name: str, role: str) -> None:
        source = dict(config["models"][name].get(role) or config["models"][name]["base"])
        role = role if config["models"][name].get(role) else "base"
        key = f"models.{name}.{role}"
        if source.get("random_llama"):
            source, key = dict(source.get("tokenizer") or {}), f"{key}.tokenizer"
        if source.get("hub"):
            item = Item("model", source["hub"], source.get("revision") or None, key)
            found.setdefault((item.repo_type, item.repo_id, item.revision), item)

    for run in finetune:
        model(run.model, "base")
    for run in baselines:
        if not config["models"][run.model].get("api"):  # an endpoint needs nothing staged
            model(run.model, "chat")
    if mirror is None:  # a mirror replaces the hub for every task
        tasks = {run.task for run in finetune} | {run.task for run in baselines}
        tasks |= {run.init_from[0] for run in finetune if run.init_from}
        for task in sorted(tasks):
            hub = (config["tasks"].get(task) or {}).get("hub") or {}
            if hub.get("id"):
                item = Item("dataset", hub["id"], hub.get("revision") or None, f"tasks.{task}.hub")
                found.setdefault((item.repo_type, item.repo_id, item.revision), item)
    # A declared task's hub source is its own data: a mirror does not replace it.
    declared = {run.task for run in finetune} | {run.task for run in baselines}
    for task in sorted(declared):
        source = (config["tasks"].get(task) or {}).get("source") or {}
        if source.get("hub"):
            item = Item("dataset", source["hub"], source.get("revision") or None, f"tasks.{task}.source")
            found.setdefault((item.repo_type, item.repo_id, item.revision), item)
    return list(found.values())


def _snapshot(item: Item, cache: Path, **options: Any) -> Path:
    """The hub's snapshot_download of ``item`` at its revision, limited to the files loading needs."""
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            item.repo_id,
            repo_type=item.repo_type,
            revision=item.revision,
            allow_patterns=item.patterns,
            cache_dir=cache,
            **options,
        )
    )


def cached_snapshot(item: Item, cache: Path) -> Path | None:
    """The snapshot directory of ``item`` in ``cache``, or None when it is not there (never downloads)."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return _snapshot(item, cache, local_files_only=True)
    except LocalEntryNotFoundError:
        return None


def fetch(needed: list[Item], hf_home: str | os.PathLike | None = None, report=print) -> dict[str, list[str]]:
    """Stage every item (see :func:`items`); returns the names found ``cached`` and those ``downloaded``."""
    cache = hub_cache(hf_home)
    cache.mkdir(parents=True, exist_ok=True)
    done: dict[str, list[str]] = {"cached": [], "downloaded": []}
    for item in needed:
        if cached_snapshot(item, cache) is not None:
            done["cached"].append(item.name)
            report(f"{item.name}: cached")
            continue
        if offline():
            raise UserError(
                f"{item.name} ({item.needed_by}) is not in the hub cache {cache} and HF_HUB_OFFLINE is set; "
                "run `tunebench fetch` where the hub is reachable, without HF_HUB_OFFLINE."
            )
        try:
            _snapshot(item, cache, token=os.environ.get("HF_TOKEN") or None)
        except Exception as exc:  # unknown id, gated repository, no network: one sentence with the reason
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(
                f"{item.name} ({item.needed_by}) could not be downloaded ({reason}); check the id, revision "
                "and HF_TOKEN."
            ) from None
        done["downloaded"].append(item.name)
        report(f"{item.name}: downloaded")
    return done


def dataset_snapshot(hub: Mapping[str, Any], task: str) -> Path:
    """The local snapshot of a task's hub dataset, downloaded unless the hub is offline.

    An id that is a local directory (as ``datasets.load_dataset`` also accepts) is that directory.
    """
    if Path(hub["id"]).expanduser().is_dir():
        return Path(hub["id"]).expanduser()
    item = Item("dataset", hub["id"], hub.get("revision") or None, f"tasks.{task}.hub")
    cache = hub_cache()
    if offline():
        snapshot = cached_snapshot(item, cache)
        if snapshot is None:
            raise DataUnavailable(missing(item, cache))
        return snapshot
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            item.repo_id,
            repo_type="dataset",
            revision=item.revision,
            allow_patterns=item.patterns,
            token=os.environ.get("HF_TOKEN") or None,
        )
    )


@contextmanager
def model_hint(source: Mapping[str, Any], key: str = "model source") -> Iterator[None]:
    """Turn transformers' OSError for a hub model missing from an offline cache into the one-sentence hint."""
    try:
        yield
    except OSError:
        if not offline():
            raise
        item = Item("model", source["hub"], source.get("revision") or None, key)
        raise NotStaged(missing(item, hub_cache())) from None
