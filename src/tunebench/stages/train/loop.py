"""The training loop: epochs of optimizer steps, validation perplexity after each, the best one kept.

One loop serves every method and scale. Accelerate hides the difference between one CPU process,
data-parallel GPUs and DeepSpeed ZeRO-3; the ZeRO settings come from the file named in the config.
Each optimizer step takes ``gradient_accumulation`` micro-batches on every process, and its loss is
the mean over all target tokens of the step on all processes (not a mean of per-batch means), so
the result does not depend on how examples were split into batches, rows or processes.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ...config import code as tb_code
from ...config import digests as tb_digests
from ...tasks import data
from ...util import fileio, hardware
from ..tracking import Tracking, training_history_metrics
from . import backend, batching, methods, wrap
from .checkpoint import ResumeDir
from .job import Job, fingerprint, layout

#: accelerate's mixed_precision for each resolved training.dtype (bfloat16_autocast: float32 weights, bf16 autocast).
MIXED_PRECISION = {"float32": "no", "bfloat16": "bf16", "bfloat16_autocast": "bf16", "float16": "fp16"}


def make_accelerator(job: Job, tracking: Tracking | None = None):
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    training = job.training
    handlers = []
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under DeepSpeed accelerate finds no process-group backend on a CPU-only host; gloo is it.
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    trackers = tracking.accelerate_trackers() if tracking else []
    return Accelerator(
        mixed_precision=MIXED_PRECISION[training["dtype"]],
        gradient_accumulation_steps=training["gradient_accumulation"],
        kwargs_handlers=handlers,
        log_with=trackers or None,
        # TensorBoard's events of this run go below this folder; nothing else is written there.
        project_dir=str(tracking.tensorboard_dir / run_name(job)) if "tensorboard" in trackers else None,
    )


def run_name(job: Job) -> str:
    """The run's name in the trackers: its stage and its place under results/."""
    return f"train/{job.task}/{job.model}/{job.run}"


def tracked_params(job: Job) -> dict:
    """What the trackers record of the run's settings (its digest names all of them)."""
    return {
        "task": job.task,
        "model": job.model,
        "method": job.method,
        "run": job.run,
        "format": job.format,
        "settings_hash": job.settings_hash,
        "training": job.training,
        "method_settings": job.method_settings,
    }


def make_optimizer(params, training: Mapping[str, Any], lr: float, offloaded: bool):
    options = {
        "lr": lr,
        "betas": (training["adam_beta1"], training["adam_beta2"]),
        "eps": training["adam_epsilon"],
        "weight_decay": training["weight_decay"],
    }
    if offloaded:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, adamw_mode=True, **options)
    # One fused kernel over every tensor: on a CPU the default per-tensor loop took about 7 times as long
    # for SmolLM2's 135M parameters, with results equal to float32 rounding (tunebench bench).
    return torch.optim.AdamW(params, fused=True, **options)


def optimizer_name(optimizer) -> str:
    """What ``run.json`` records of the optimizer (fused or not)."""
    while hasattr(optimizer, "optimizer"):  # accelerate's and DeepSpeed's wrappers hold the torch optimizer
        optimizer = optimizer.optimizer
    return type(optimizer).__name__ + (" (fused)" if getattr(optimizer, "defaults", {}).get("fused") else "")


def epoch_batches(examples, epoch: int, training: Mapping[str, Any]) -> list[list[list[batching.Example]]]:
    """The batches of one epoch: a seeded shuffle (same for every process), then rows, then batches."""
    order = list(range(len(examples)))
    random.Random(training["seed"] * 100_003 + epoch).shuffle(order)
    rows = batching.layout_rows([examples[i] for i in order], training["batching"], training["max_length"])
    size = training["batch_size"]
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def steps_in(batches: list, world: int, accum: int) -> int:
    return math.ceil(len(batches) / (world * accum))


def _micro_batches(batches, step: int, world: int, rank: int, accum: int):
    """This process's micro-batches of one step; slots past the end repeat batch 0 with no targets,
    so every process runs the same number of passes (ZeRO-3 gathers weights collectively)."""
    for k in range(accum):
        index = (step * accum + k) * world + rank
        yield (batches[index], True) if index < len(batches) else (batches[0], False)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def cpu_seconds() -> float:
    """User and system CPU time of this process (all its threads) and of its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def judge_epoch(best: float | None, stale: int, perplexity: float, patience: int | None) -> tuple[bool, int, bool]:
    """(improved, epochs without improvement, stop early) after an epoch; only a strictly lower
    validation perplexity counts as an improvement."""
    improved = best is None or perplexity < best
    stale = 0 if improved else stale + 1
    return improved, stale, patience is not None and stale >= patience


def _fresh_position() -> dict:
    return {
        "epoch": 1,
        "step": 0,
        "global_step": 0,
        "best": None,
        "stale": 0,
        "history": [],
        "train_tokens": 0,
        "wall_time_s": 0.0,
        "cpu_time_s": 0.0,
        "done": False,
        "partial": None,
    }


class Trainer:
    """Everything one run needs, built from the resolved job; :meth:`run` is the loop."""

    def __init__(self, job: Job, log=sys.stderr, tracking: Tracking | None = None):
        from accelerate.utils import set_seed
        from transformers import get_scheduler

        self.job = job
        self.log = log
        self.training = training = job.training
        self.tracking = tracking if tracking and tracking.enabled else None
        self.accelerator = make_accelerator(job, self.tracking)
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.accum = training["gradient_accumulation"]
        self.layout = training["batching"]
        self.pad_to = training["pad_to"] if self.layout == "pad_to" else None
        set_seed(job.seed)
        self.deepspeed = backend.fill_deepspeed(self.accelerator, training)

        self.built = wrap.build(job, self.accelerator.device)
        self.compiled, self.compile_why = hardware.training_compile(
            training["compile"], quantized=methods.get(job.method).quantized, deepspeed=self.deepspeed
        )
        if self.compiled:
            wrap.compile_layers(self.built.model)
        self.tokenizer = self.built.tokenizer
        task = job.definition
        self.examples = {}
        self.stats = {}
        for split in ("train", "validation"):
            self.examples[split], self.stats[split] = batching.encode_rows(
                self.tokenizer,
                job.format,
                task,
                data.read_rows(job.data[split]["path"]),
                training["loss_on"],
                training["max_length"],
                job.data[split]["path"],
            )
        self.plans = {e: epoch_batches(self.examples["train"], e, training) for e in range(1, training["epochs"] + 1)}
        total_steps = sum(steps_in(b, self.world, self.accum) for b in self.plans.values())

        params = [p for p in self.built.model.parameters() if p.requires_grad]
        optimizer = make_optimizer(
            params, training, job.method_settings["learning_rate"], backend.offloads_optimizer(self.accelerator)
        )
        self.scheduler = get_scheduler(
            training["lr_schedule"],
            optimizer,
            num_training_steps=total_steps,
            num_warmup_steps=training["warmup_steps_per_device"] * self.world,
        )
        self.model, self.optimizer = self.accelerator.prepare(self.built.model, optimizer)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def record(self, position: dict, entry: dict) -> None:
        """Append a step's or an epoch's entry to the history, and send a copy to the trackers that are on."""
        position["history"].append(entry)
        if self.tracking:
            self.accelerator.log(training_history_metrics(entry), step=position["global_step"])

    def say(self, text: str) -> None:
        if self.main:
            print(text, file=self.log, flush=True)

    def reduce(self, *values: float) -> list[float]:
        """Sums over processes."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return (self.accelerator.reduce(tensor, reduction="sum") if self.world > 1 else tensor).tolist()

    def collate(self, rows):
        return batching.collate(rows, self.tokenizer.pad_token_id, self.layout, self.pad_to)

    def nll(self, batch):
        """(summed NLL, target count) of a collated batch.

        Only positions with a target are projected onto the vocabulary (``logits_to_keep``): with the
        prompt masked that skips a third to a half of the output layer and its softmax.
        """
        device = self.accelerator.device
        inputs = {
            k: v.to(device) if torch.is_tensor(v) else v for k, v in batching.model_inputs(batch, self.layout).items()
        }
        labels = batch["labels"].to(device)
        targets = labels != batching.IGNORE
        return batching.loss_sums(self.model(**inputs, logits_to_keep=targets).logits, labels[targets])

    def step(self, batches, step: int) -> dict:
        """One optimizer step; returns its summed NLL, targets, real tokens and CPU seconds over all processes."""
        cpu_started = cpu_seconds()
        self.model.train()
        micro = [
            (self.collate(rows), real)
            for rows, real in _micro_batches(batches, step, self.world, self.rank, self.accum)
        ]
        (targets,) = self.reduce(sum(int((b["labels"] != batching.IGNORE).sum()) for b, real in micro if real))
        tokens = sum(int(b["attention_mask"].sum()) for b, real in micro if real)
        step_nll = 0.0
        for batch, real in micro:
            if not real:
                batch = dict(batch, labels=torch.full_like(batch["labels"], batching.IGNORE))
            with self.accelerator.accumulate(self.model):
                nll, _ = self.nll(batch)
                # Gradients are averaged over processes and divided by `accum` (by accelerate or
                # DeepSpeed); scaling by world * accum / all targets leaves d(sum NLL) / targets.
                self.accelerator.backward(nll * (self.world * self.accum) / targets)
                if self.accelerator.sync_gradients and self.training["max_grad_norm"]:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), self.training["max_grad_norm"])
                self.optimizer.step()
                self.optimizer.zero_grad()
            step_nll += float(nll.detach())
        self.scheduler.step()
        step_nll, tokens, cpu = self.reduce(step_nll, tokens, cpu_seconds() - cpu_started)
        return {"nll": step_nll, "targets": targets, "tokens": tokens, "cpu_seconds": cpu}

    def validate(self) -> tuple[float, float]:
        """(validation loss, perplexity): token-mean NLL over the whole split, every process a share."""
        self.model.eval()
        rows = batching.layout_rows(self.examples["validation"], self.layout, self.training["max_length"])
        size = self.training["batch_size"]
        batches = [rows[i : i + size] for i in range(0, len(rows), size)]
        nll_total = 0.0
        targets_total = 0.0
        with torch.no_grad():
            # Processes past the end repeat the last batch uncounted, so all run the same passes.
            for index in range(self.rank, math.ceil(len(batches) / self.world) * self.world, self.world):
                nll, targets = self.nll(self.collate(batches[min(index, len(batches) - 1)]))
                if index < len(batches):
                    nll_total += float(nll)
                    targets_total += float(targets)
        nll_total, targets_total = self.reduce(nll_total, targets_total)
        return nll_total / targets_total, math.exp(nll_total / targets_total)

    def export(self, directory: Path) -> None:
        meta = wrap.checkpoint_meta(self.job, self.built.new_token_ids)
        state_dict = self.accelerator.get_state_dict(self.model) if self.deepspeed else None
        wrap.export(
            self.accelerator.unwrap_model(self.model),
            self.tokenizer,
            directory,
            meta,
            state_dict=state_dict,
            is_main=self.main,
            save_function=self.accelerator.save,
        )

    def peak_memory_mb(self) -> float:
        peaks = self.accelerator.gather(
            torch.tensor([_peak_memory_mb(self.accelerator.device)], device=self.accelerator.device)
        )
        # CPU processes share the host's memory, so their peaks add up; GPUs are sized one by one.
        return float(peaks.max() if self.accelerator.device.type == "cuda" else peaks.sum())

    def run(self, out_dir: Path, resume_path: Path) -> dict:
        training = self.training
        epochs = training["epochs"]
        every = training["checkpoint_every_steps"]
        # Every rank names its host, so a multi-node job's log shows where its ranks ran.
        print(f"rank {self.rank} of {self.world} on host {socket.gethostname()}", file=self.log, flush=True)
        self.say(
            f"precision: {training['dtype']} (training.dtype {training['dtype_requested']}"
            f" on {self.accelerator.device.type})"
        )
        self.say(
            f"compile: {'decoder layers' if self.compiled else 'off'} "
            f"(training.compile {str(training['compile']).lower()}: {self.compile_why})"
        )
        resume = ResumeDir(resume_path, self.accelerator, fingerprint(self.job), layout(self.job))
        message = resume.prepare()
        if message:
            self.say(message)
        position = resume.load(self.model, self.optimizer, self.scheduler)
        if position is None:
            position = _fresh_position()
        else:
            self.say(f"resuming at epoch {position['epoch']}, step {position['step']} from {resume.latest()}")
        if self.tracking:
            self.tracking.start_training(self.accelerator, run_name(self.job), tracked_params(self.job))
        while not position["done"]:
            epoch = position["epoch"]
            batches = self.plans[epoch]
            steps = steps_in(batches, self.world, self.accum)
            sums = position["partial"] or dict.fromkeys(("nll", "targets", "tokens", "seconds", "cpu_seconds"), 0.0)
            bar = tqdm(
                total=steps,
                initial=position["step"],
                desc=f"epoch {epoch}/{epochs}",
                unit="step",
                disable=not self.main,
                file=self.log,
                dynamic_ncols=True,
                mininterval=2.0,
            )
            for step in range(position["step"], steps):
                started = time.perf_counter()
                lr = self.scheduler.get_last_lr()[0]
                done = self.step(batches, step)
                done["seconds"] = time.perf_counter() - started
                for key in sums:
                    sums[key] += done[key]
                loss = done["nll"] / done["targets"]
                position["global_step"] += 1
                position["step"] = step + 1
                self.record(
                    position,
                    {
                        "kind": "step",
                        "epoch": epoch,
                        "step": position["global_step"],
                        "loss": round(loss, 6),
                        "lr": lr,
                        "tokens_per_s": round(done["tokens"] / done["seconds"], 1),
                    },
                )
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                if every and position["global_step"] % every == 0 and step + 1 < steps:
                    resume.save(self.model, self.optimizer, self.scheduler, dict(position, partial=sums))
            bar.close()

            val_loss, perplexity = self.validate()
            train_loss = sums["nll"] / sums["targets"]
            rate = sums["tokens"] / max(sums["seconds"], 1e-9)
            peak = self.peak_memory_mb()
            best = position["best"]["validation_perplexity"] if position["best"] else None
            improved, position["stale"], stop = judge_epoch(
                best, position["stale"], perplexity, training["early_stop_patience"]
            )
            if improved:
                position["best"] = {
                    "epoch": epoch,
                    "validation_perplexity": perplexity,
                    "validation_loss": val_loss,
                    "dir": resume.save_best(epoch, self.export),
                }
            self.record(
                position,
                {
                    "kind": "epoch",
                    "epoch": epoch,
                    "train_loss": round(train_loss, 6),
                    "validation_loss": round(val_loss, 6),
                    "validation_perplexity": round(perplexity, 6),
                    "wall_time_s": round(sums["seconds"], 2),
                    "tokens_per_s": round(rate, 1),
                    "peak_memory_mb": round(peak, 1),
                },
            )
            position.update(
                epoch=epoch + 1,
                step=0,
                partial=None,
                done=stop or epoch == epochs,
                train_tokens=position["train_tokens"] + int(sums["tokens"]),
                wall_time_s=position["wall_time_s"] + sums["seconds"],
                cpu_time_s=position["cpu_time_s"] + sums["cpu_seconds"],
            )
            self.say(
                f"epoch {epoch}/{epochs}: train loss {train_loss:.4f}, validation loss {val_loss:.4f}, perplexity "
                f"{perplexity:.3f}"
                f"{' (best)' if improved else ''}; {rate:.0f} tokens/s, {sums['seconds']:.0f} s, peak memory "
                f"{peak:.0f} MB" + ("; stopping early" if stop else "")
            )
            resume.save(self.model, self.optimizer, self.scheduler, position)

        summary = _finish(self, out_dir, resume, position)
        resume.remove()
        if self.tracking:
            self.accelerator.end_training()
        return summary


def train(job: Job, out_dir: Path, resume_path: Path, log=sys.stderr, tracking: Tracking | None = None) -> dict:
    """Run (or resume) the job; write the outputs into ``out_dir``; return ``run.json``'s content."""
    return Trainer(job, log, tracking).run(Path(out_dir), Path(resume_path))


def peak_of(position: Mapping[str, Any]) -> float:
    return max((h["peak_memory_mb"] for h in position["history"] if h["kind"] == "epoch"), default=0.0)


def _finish(trainer: Trainer, out_dir: Path, resume: ResumeDir, position: dict) -> dict:
    """Write the declared outputs; best.json last, since downstream rules wait for it."""
    job = trainer.job
    accelerator = trainer.accelerator
    stats = trainer.stats
    best = position["best"]
    summary = {
        "task": job.task,
        "model": job.model,
        "method": job.method,
        "run": job.run,
        "format": job.format,
        "stage": job.stage,
        "train_tokens": position["train_tokens"],
        "wall_time_s": round(position["wall_time_s"], 2),
        # The CPU time of every process over the same optimizer steps: what a CPU-hour of the cost table counts.
        "cpu_time_s": round(position["cpu_time_s"], 2),
        "peak_memory_mb": peak_of(position),
        "device": accelerator.device.type,
        "num_processes": accelerator.num_processes,
        "distributed": backend.distributed(accelerator),
        "epochs_run": sum(1 for h in position["history"] if h["kind"] == "epoch"),
        "trainable_params": trainer.built.trainable_params,
        "total_params": trainer.built.total_params,
        "examples": {split: stats[split].examples for split in stats},
        "truncated_examples": {split: stats[split].truncated for split in stats},
        "skipped_examples": {split: stats[split].skipped for split in stats},
        "hardware": hardware.describe_run(trainer.built.model),
        "optimizer": optimizer_name(trainer.optimizer),
        "compile": {
            "requested": trainer.training["compile"],
            "compiled": "decoder layers" if trainer.compiled else "none",
            "why": trainer.compile_why,
        },
        "settings_hash": job.settings_hash,
        "code": tb_code.provenance(train=tb_digests.train_code(job.definition)),
    }
    if trainer.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        resume.publish_best(best["dir"], out_dir / "checkpoint")
        fileio.write_jsonl(out_dir / "history.jsonl", position["history"])
        fileio.write_atomic(out_dir / "config.json", json.dumps(job.to_dict(), indent=2) + "\n")
        fileio.write_atomic(out_dir / "run.json", json.dumps(summary, indent=2) + "\n")
        best_json = {
            "epoch": best["epoch"],
            "validation_perplexity": best["validation_perplexity"],
            "validation_loss": best["validation_loss"],
            "checkpoint": "checkpoint",
        }
        fileio.write_atomic(out_dir / "best.json", json.dumps(best_json, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return summary
