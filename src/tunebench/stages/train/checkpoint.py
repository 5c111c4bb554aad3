"""Resume state of a training run, kept beside (not inside) the run's output directory.

``results/train/{task}/{model}/{run}.resume/`` is not a declared Snakemake output, so when a killed
job is re-run Snakemake's clean-up of incomplete outputs leaves it alone and the new job continues
from it. Layout::

    fingerprint.json   hash of the resolved settings, data and training code; a mismatch discards the state
    LATEST             name of the newest complete state directory (replaced atomically)
    state-0000120/     weights being trained (or the DeepSpeed engine), optimizer, scheduler,
                       RNG of every process, and position.json (epoch, step, history, best so far)
    best-e003/         the exported model of the best epoch so far

Every directory is written under a ``.tmp`` name and renamed when complete, and ``LATEST`` moves only
after that, so a kill at any moment leaves the previous state usable.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ...util import fileio
from ...util.errors import UserError

LATEST = "LATEST"
FINGERPRINT = "fingerprint.json"


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def check_layout(path: Path, fingerprint: str, layout: dict) -> None:
    """Refuse, before any process starts, a resume state of this run saved on another node or process count.

    DeepSpeed shards (and every rank's RNG state) belong to the world that wrote them; converting them
    (DeepSpeed's universal checkpoint) is not worth its cost for a requeued job, which gets the same nodes.
    """
    stored = Path(path) / FINGERPRINT
    if not stored.is_file() or not (Path(path) / LATEST).is_file():
        return
    saved = json.loads(stored.read_text())
    if saved.get("fingerprint") == fingerprint and saved.get("layout") not in (None, layout):
        before, now = saved["layout"], layout
        was = f"{before['nodes']} node(s) × {before['processes'] // before['nodes']} processes"
        runs = f"{now['nodes']} × {now['processes'] // now['nodes']}"
        raise UserError(
            f"{path} was saved by {was} but this job runs {runs}; "
            f"resume on the same node count or delete {path} to start afresh."
        )


class ResumeDir:
    """Save and restore the resume state; every process calls every method (they synchronise)."""

    def __init__(self, path: Path, accelerator, fingerprint: str, layout: dict | None = None):
        self.path = Path(path)
        self.accelerator = accelerator
        self.fingerprint = fingerprint
        self.layout = layout
        self.deepspeed = accelerator.distributed_type.name == "DEEPSPEED"

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def _barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def prepare(self) -> str | None:
        """Start or reuse the directory; returns a message when an old state was discarded."""
        message = None
        if self.main:
            stored = self.path / FINGERPRINT
            if self.path.exists() and (
                not stored.is_file() or json.loads(stored.read_text()).get("fingerprint") != self.fingerprint
            ):
                shutil.rmtree(self.path)
                message = f"discarded resume state in {self.path}: other settings, data or training code made it"
            self.path.mkdir(parents=True, exist_ok=True)
            stored.write_text(json.dumps({"fingerprint": self.fingerprint, "layout": self.layout}) + "\n")
        self._barrier()
        return message

    def latest(self) -> Path | None:
        pointer = self.path / LATEST
        if not pointer.is_file():
            return None
        state = self.path / pointer.read_text().strip()
        return state if (state / "position.json").is_file() else None

    def load(self, model, optimizer, scheduler) -> dict | None:
        """Restore the newest state into the prepared objects; returns its position or None."""
        state = self.latest()
        if state is None:
            return None
        if self.deepspeed:
            loaded, _ = model.load_checkpoint(
                str(state / "engine"), tag="engine", load_optimizer_states=True, load_lr_scheduler_states=False
            )
            if loaded is None:
                raise UserError(
                    f"the DeepSpeed state in {state} cannot be read; delete {self.path} to start the run afresh."
                )
        else:
            params = _trainable(self.accelerator.unwrap_model(model))
            saved = load_file(state / "trainable.safetensors")
            if set(saved) != set(params):
                raise UserError(
                    f"the resume state in {state} trains other weights than this run; delete {self.path} to start "
                    "afresh."
                )
            with torch.no_grad():
                for name, tensor in saved.items():
                    params[name].copy_(tensor)
            optimizer.load_state_dict(torch.load(state / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(state / "scheduler.pt", weights_only=True))
        # Our own pickle from this run's directory; numpy's RNG state is not a plain tensor.
        _set_rng_state(torch.load(state / f"rng-{self.accelerator.process_index}.pt", weights_only=False))
        return json.loads((state / "position.json").read_text())

    def _begin(self, name: str) -> Path:
        """An empty ``{name}.tmp`` directory (made by the main process) that every process may write into."""
        tmp = self.path / f"{name}.tmp"
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self._barrier()
        return tmp

    def _complete(self, tmp: Path, name: str) -> None:
        """Rename a finished ``tmp`` directory to ``name`` (main process only), replacing an older one."""
        shutil.rmtree(self.path / name, ignore_errors=True)
        os.replace(tmp, self.path / name)

    def save(self, model, optimizer, scheduler, position: dict) -> None:
        name = f"state-{position['global_step']:07d}-e{position['epoch']:03d}s{position['step']:06d}"
        tmp = self._begin(name)
        if self.deepspeed:
            model.save_checkpoint(str(tmp / "engine"), tag="engine")
        elif self.main:
            params = _trainable(self.accelerator.unwrap_model(model))
            save_file({n: p.detach().cpu().contiguous() for n, p in params.items()}, tmp / "trainable.safetensors")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(_rng_state(), tmp / f"rng-{self.accelerator.process_index}.pt")
        if self.main:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / "position.json").write_text(json.dumps(position) + "\n")
        self._barrier()
        if self.main:
            self._complete(tmp, name)
            fileio.write_atomic(self.path / LATEST, name + "\n")
            self._clean(keep={name, (position.get("best") or {}).get("dir")})
        self._barrier()

    def save_best(self, epoch: int, write: Callable[[Path], None]) -> str:
        """Export the model of ``epoch`` with ``write(directory)`` (called on every process)."""
        name = f"best-e{epoch:03d}"
        tmp = self._begin(name)
        write(tmp)
        self._barrier()
        if self.main:
            self._complete(tmp, name)
        self._barrier()
        return name

    def _clean(self, keep: set) -> None:
        """Remove older states, unfinished writes and best exports no state points to."""
        for entry in self.path.iterdir():
            if entry.is_dir() and entry.name not in keep:
                shutil.rmtree(entry)

    def publish_best(self, name: str, target: Path) -> None:
        """Place the selected export at ``target`` (hard links where the file system allows)."""
        if not self.main:
            return
        if target.exists():
            shutil.rmtree(target)

        def link(src: str, dst: str) -> Any:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(self.path / name, target, copy_function=link)

    def remove(self) -> None:
        self._barrier()
        if self.main:
            shutil.rmtree(self.path, ignore_errors=True)
        self._barrier()
