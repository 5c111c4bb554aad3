"""``tunebench bench --peers``: our training loop and evaluation beside the tools a user would pick instead.

Both sides run in one process, one after the other, on the same rows, the same model, the same torch
threads and the same precision (the one ``training.dtype: auto`` picks on this machine):

``peer training``    TRL's ``SFTTrainer`` with its own best-fit packing (padding-free rows) against
                     ``tunebench train``'s loop with its packing (and the decoder layers compiled where
                     ``training.compile: auto`` compiles them), LoRA (the same PEFT preset) and full
                     fine-tuning: useful tokens/s of the steps after the first; then both train the same
                     examples in the same order, batch by batch, and their per-token losses are compared
``peer evaluation``  lm-evaluation-harness's ``hf`` model (transformers' ``generate``) on the same GSM8K
                     test rows, zero-shot chat prompt and greedy decoding against ``tunebench evaluate``
                     (the batch-invariant decoder): examples/s, the share of identical prompts, outputs
                     and extracted answers, and of equal verdicts (its ``strict-match`` filter against
                     our strict scorer)
``ceiling``          this CPU's matmul rate in float32 and bfloat16, which each side's training rate is set
                     against (6 FLOPs per parameter and token) in ``peers_ceiling_share.csv``

The peers are optional extras of the bench (``pip install -e .[bench]``, pinned in the lock); the
stages never import them.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import config as tb_config
from ..stages import formats
from ..util import fileio
from ..util.errors import UserError
from . import bench

PEERS = {"trl": "trl", "lm-eval": "lm_eval"}
#: The training comparison's prompt format: it adds no tokens. With the special-token format, PEFT wraps the
#: output layer to train the new rows, and TRL's fused output layer fails on that wrapper (it has no ``bias``).
FORMAT = "instruction"


#: Largest per-token loss difference of the same steps on both sides that still counts as the same computation:
#: TRL's output layer computes log-probabilities in chunks, ours in one piece, so float32 sums differ in order.
LOSS_TOLERANCE = 1e-4

#: The two training measures (see :func:`_rates`).
WALL = "useful tokens/s"
CPU = bench.CPU_RATE


@dataclass(frozen=True)
class PeerSize:
    """How much each peer comparison does; ``quick`` only checks that it runs."""

    repeats: int
    train_steps: int  # timed steps after one untimed first step
    train_rows: int
    agreement_steps: int  # steps of the same examples in the same order on both sides
    eval_rows: int
    new_tokens: int
    eval_batch: int


# Fields in order: repeats, train_steps, train_rows, agreement_steps, eval_rows, new_tokens, eval_batch.
FULL = PeerSize(3, 3, 64, 3, 32, 64, 16)  # about a quarter of an hour on two idle cores
QUICK = PeerSize(1, 1, 16, 2, 4, 8, 4)


def require_peers() -> None:
    """Stop with one sentence when the bench's optional peers are not installed."""
    import importlib.util

    missing = [name for name, module in PEERS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(
            f"tunebench bench --peers needs {' and '.join(missing)}; install the bench extra "
            "(pip install -e '.[bench]', pinned in requirements.lock)."
        )


# ---------------------------------------------------------------------------------------------- training


def _trl_dataset(examples):
    """Our tokenised examples as TRL's pre-tokenised rows: ``completion_mask`` marks the tokens that are
    targets (our labels are already shifted: label ``t`` is the target of token ``t + 1``)."""
    from datasets import Dataset

    from ..stages.train import batching

    return Dataset.from_list(
        [
            {"input_ids": e.input_ids, "completion_mask": [0] + [int(t != batching.IGNORE) for t in e.labels[:-1]]}
            for e in examples
        ]
    )


def _trl_trainer(ours, examples, out: Path, *, packing: bool, batch_size: int, max_steps: int, in_order: bool):
    """TRL's SFTTrainer on a model built as ours was (same seed, same preset), with our optimizer settings.

    ``in_order`` keeps the examples' order (TRL otherwise draws its own); the returned trainer records
    each step's loss, real tokens and end time.
    """
    from accelerate.utils import set_seed
    from transformers import PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from ..stages.train import wrap

    job = ours.job
    training = job.training
    set_seed(job.seed)
    # Built in the weights' own dtype: our autocast-only storage of frozen LoRA weights in bfloat16 is
    # not given to the peer; with autocast it computes in bfloat16 through the Trainer's ``bf16``.
    built = wrap.build(dataclasses.replace(job, training={**training, "dtype": "float32"}), torch.device("cpu"))

    record: dict[str, list] = {"loss": [], "tokens": [], "ends": [], "cpu": [], "pending": [0]}

    def count(module, args, kwargs):
        record["pending"][0] += int(kwargs["input_ids"].numel())  # padding-free: every token is real

    built.model.register_forward_pre_hook(count, with_kwargs=True)

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            record["ends"].append(time.perf_counter())
            record["cpu"].append(time.process_time())
            record["tokens"].append(record["pending"][0])
            record["pending"][0] = 0

    class Recording(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            record["loss"].append(float((loss[0] if return_outputs else loss).detach()))
            return loss

        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset) if in_order else super()._get_train_sampler()

    args = SFTConfig(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        learning_rate=job.method_settings["learning_rate"],
        lr_scheduler_type=training["lr_schedule"],
        warmup_steps=training["warmup_steps_per_device"],
        weight_decay=training["weight_decay"],
        adam_beta1=training["adam_beta1"],
        adam_beta2=training["adam_beta2"],
        adam_epsilon=training["adam_epsilon"],
        max_grad_norm=training["max_grad_norm"] or 0.0,
        optim="adamw_torch",
        bf16=training["dtype"] == "bfloat16_autocast",
        use_cpu=True,
        seed=job.seed,
        max_length=training["max_length"] if packing else None,  # unpacked rows come already cut
        packing=packing,
        padding_free=True,
        completion_only_loss=True,
        gradient_checkpointing=training["gradient_checkpointing"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Recording(
        model=built.model,
        args=args,
        train_dataset=_trl_dataset(examples),
        processing_class=built.tokenizer,
        callbacks=[Steps()],
    )
    trainer.remove_callback(PrinterCallback)  # its per-step lines would bury the bench's own
    return trainer, record


def _step_rate(ends: list[float], tokens: list[int], began: float) -> float:
    """Useful tokens/s of every step after the first (which warms kernels and allocator up)."""
    if len(ends) < 2:
        return tokens[0] / (ends[0] - began)
    return sum(tokens[1:]) / (ends[-1] - ends[0])


def _rates(record: Mapping[str, list], began: float, cpu_began: float) -> dict[str, float]:
    """Both measures of the same steps: per second of wall time and per second of this process's CPU time.

    On a machine shared with other jobs the wall-clock rate follows their load; the CPU time counts only
    what this process's threads ran, so it compares the work of the two sides more steadily.
    """
    return {
        WALL: _step_rate(record["ends"], record["tokens"], began),
        CPU: _step_rate(record["cpu"], record["tokens"], cpu_began),
    }


def _ours_rate(trainer, steps: int) -> dict[str, float]:
    plan = trainer.plans[1]
    record: dict[str, list] = {"ends": [], "cpu": [], "tokens": []}
    began, cpu_began = time.perf_counter(), time.process_time()
    for step in range(min(steps + 1, len(plan))):
        done = trainer.step(plan, step)
        record["ends"].append(time.perf_counter())
        record["cpu"].append(time.process_time())
        record["tokens"].append(int(done["tokens"]))
    return _rates(record, began, cpu_began)


def _trl_rate(config, task, method, data_dir, work: Path, size: PeerSize, tag: str) -> dict[str, float]:
    ours = bench._trainer(config, task, method, data_dir, work / f"ours-{tag}", FORMAT, compile="auto")
    trainer, record = _trl_trainer(
        ours,
        ours.examples["train"],
        work / f"trl-{tag}",
        packing=True,
        batch_size=ours.training["batch_size"],
        max_steps=size.train_steps + 1,
        in_order=False,
    )
    began, cpu_began = time.perf_counter(), time.process_time()
    trainer.train()
    return _rates(record, began, cpu_began)


def _loss_agreement(config, task, method, data_dir, work: Path, size: PeerSize) -> dict[str, Any]:
    """Both sides train the same examples in the same order, twice ``batch_size`` examples a step in one row."""
    from ..stages.train import loop

    ours = bench._trainer(config, task, method, data_dir, work / "agree-ours", FORMAT, max_length=2048, compile="auto")
    per_step = ours.training["batch_size"] * 2
    order = [example for batch in ours.plans[1] for row in batch for example in row]
    examples = order[: per_step * size.agreement_steps]
    batches = [[examples[i : i + per_step]] for i in range(0, len(examples), per_step)]
    ours_losses = []
    for step in range(len(batches)):
        done = ours.step(batches, step)
        ours_losses.append(done["nll"] / done["targets"])
    # TRL's schedule runs as long as ours, so the learning rates of the first steps agree.
    total = sum(loop.steps_in(plan, 1, ours.accum) for plan in ours.plans.values())
    trl, record = _trl_trainer(
        ours, examples, work / "agree-trl", packing=False, batch_size=per_step, max_steps=total, in_order=True
    )

    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= len(batches)

    trl.add_callback(Stop())
    trl.train()
    differences = [abs(a - b) for a, b in zip(ours_losses, record["loss"])]
    return {
        "first_losses_ours": " ".join(f"{v:.6f}" for v in ours_losses),
        "first_losses_peer": " ".join(f"{v:.6f}" for v in record["loss"]),
        "max_loss_difference": max(differences) if differences else float("nan"),
    }


def training(config: Mapping, data_dirs: Mapping[str, Path], size: PeerSize, work: Path) -> list[dict]:
    rows = []
    for method in ("lora", "full"):
        rates: dict[tuple[str, str], list[float]] = {}
        for repeat in range(size.repeats):
            ours = bench._trainer(
                config, "viggo", method, data_dirs["viggo"], work / f"ours-{method}-{repeat}", FORMAT, compile="auto"
            )
            measured = {
                "tunebench": _ours_rate(ours, size.train_steps),
                "trl": _trl_rate(config, "viggo", method, data_dirs["viggo"], work, size, f"{method}-{repeat}"),
            }
            for variant, by_metric in measured.items():
                for metric, value in by_metric.items():
                    rates.setdefault((metric, variant), []).append(value)
        agreement = _loss_agreement(config, "viggo", method, data_dirs["viggo"], work / f"agree-{method}", size)
        params = sum(p.numel() for p in ours.built.model.parameters())  # what the FLOP count of the rate uses
        for (metric, variant), values in rates.items():
            rows.append(
                {
                    "comparison": "peer training",
                    "case": f"viggo {method} {ours.training['dtype']}",
                    "variant": variant,
                    "metric": metric,
                    **bench._summary(values),
                    **agreement,
                    "params": params,
                }
            )
    return rows


# -------------------------------------------------------------------------------------------- evaluation


def _harness_task(rows: list[dict], directory: Path, system: str, until: list[str], new_tokens: int) -> dict:
    """An lm-evaluation-harness task over our GSM8K rows (a local JSON file, never the hub): its ``gsm8k``
    task's target, metric and ``strict-match`` filter, with our zero-shot user message."""
    import lm_eval
    import yaml

    spec = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml").read_text())
    path = directory / "test.jsonl"
    fileio.write_jsonl(path, [{"question": row["prompt"], "answer": f"#### {row['answer']}"} for row in rows])
    return {
        "task": "tunebench_gsm8k",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "Problem: {{question}}\nSolution:",
        "doc_to_target": spec["doc_to_target"],
        "metric_list": spec["metric_list"],
        "generation_kwargs": {"until": until, "do_sample": False, "max_gen_toks": new_tokens},
        "filter_list": [f for f in spec["filter_list"] if f["name"] == "strict-match"],
        "num_fewshot": 0,
        "repeats": 1,
        "metadata": {"version": 0, "system": system},
    }


def evaluation(config: Mapping, data_dirs: Mapping[str, Path], size: PeerSize, work: Path) -> list[dict]:
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM

    from .. import tasks
    from ..stages import evaluate, models
    from ..tasks.scoring import gsm8k as gsm8k_scoring

    gsm8k = {**config["tasks"]["gsm8k"], "limit": {"test": size.eval_rows}, "few_shot": 0}
    config = tb_config.Experiment.of(
        {
            **config,
            "evaluation": {**config["evaluation"], "batch_size": size.eval_batch},
            "tasks": {**config["tasks"], "gsm8k": {**gsm8k, "max_new_tokens": size.new_tokens}},
        }
    )
    model, tokenizer = models.load_for_inference(config, bench.MODEL, role="chat")
    rows = evaluate.test_rows(config, "gsm8k", data_dirs["gsm8k"])
    spec = evaluate.resolve(config, "gsm8k", bench.MODEL, "baseline")
    ours_texts = evaluate.prompt_texts(config.tasks.get("gsm8k"), spec, rows, tokenizer, [], config["tasks"]["gsm8k"])
    system = tasks.get("gsm8k").baseline_messages(rows[0], [], "default", config["tasks"]["gsm8k"])[0]["content"]
    until = formats.stop_strings(spec.format, tokenizer)
    task = _harness_task(rows, work, system, until, size.new_tokens)
    harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=size.eval_batch, device="cpu")

    # Our default decoder on a CPU is the batch-invariant one (outputs do not depend on the batch);
    # with evaluation.decoder: generate we decode as the harness does, through transformers' generate.
    decoders = {"tunebench": "batch_invariant", "tunebench generate": "generate"}
    rates: dict[str, list[float]] = {variant: [] for variant in [*decoders, "lm-eval"]}
    for repeat in range(size.repeats):
        for variant, path in decoders.items():
            chosen = tb_config.Experiment.of({**config, "evaluation": {**config["evaluation"], "decoder": path}})
            seconds, _ = bench._timed(
                lambda: evaluate.evaluate(
                    chosen,
                    "gsm8k",
                    bench.MODEL,
                    "baseline",
                    data_dir=data_dirs["gsm8k"],
                    out_dir=work / f"{path}-{repeat}",
                    loaded=(model, tokenizer),
                )
            )
            rates[variant].append(len(rows) / seconds)
        seconds, result = bench._timed(
            lambda: evaluator.simple_evaluate(
                model=harness,
                tasks=[task],
                limit=size.eval_rows,
                apply_chat_template=True,
                system_instruction=system,
                log_samples=True,
                bootstrap_iters=0,
                verbosity="ERROR",
            )
        )
        rates["lm-eval"].append(len(rows) / seconds)
    samples = sorted(result["samples"]["tunebench_gsm8k"], key=lambda s: s["doc_id"])
    found = []
    for variant, values in rates.items():
        path = decoders.get(variant, "batch_invariant")  # the harness's row carries the default's agreement
        predictions = fileio.read_jsonl(work / f"{path}-{size.repeats - 1}" / "predictions.jsonl", "")
        found.append(
            {
                "comparison": "peer evaluation",
                "case": f"gsm8k {len(rows)} rows, {size.new_tokens} tokens, {str(model.dtype).removeprefix('torch.')}",
                "variant": variant,
                "metric": "examples/s",
                **bench._summary(values),
                **_agreement([record for _, record in predictions], ours_texts, samples, gsm8k_scoring),
            }
        )
    return found


def _agreement(ours: list[dict], ours_texts: list[str], samples: list[dict], scoring) -> dict[str, Any]:
    """Shares of rows with the same prompt text, output, extracted answer and verdict on both sides."""
    pairs = list(zip(ours, ours_texts, samples))
    same_prompt = [text == sample["arguments"][0][0] for _, text, sample in pairs]
    same_output = [row["output"] == sample["resps"][0][0] for row, _, sample in pairs]
    ours_answers = [scoring.extract_strict(row["output"]) for row, _, _ in pairs]
    peer_answers = [_number(sample["filtered_resps"][0]) for _, _, sample in pairs]
    same_answer = [a == b for a, b in zip(ours_answers, peer_answers)]
    verdicts = [
        bool(row["verdict"]["strict_accuracy"]) == bool(sample["exact_match"])
        for (row, _, sample), same in zip(pairs, same_answer)
        if same
    ]
    return {
        "rows": len(pairs),
        "identical_prompts": _share(same_prompt),
        "identical_outputs": _share(same_output),
        "identical_answers": _share(same_answer),
        "equal_verdicts_where_answers_identical": _share(verdicts),
    }


def _share(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def _number(filtered: str):
    from ..tasks.scoring import parse_number

    return parse_number(filtered) if filtered and filtered != "[invalid]" else None


# ----------------------------------------------------------------------------------------------- the run

REFERENCES = {"peer training": "trl", "peer evaluation": "lm-eval"}


def run(
    out_dir: Path, quick: bool = False, threads: int | None = None, report: Callable[[str], None] = print
) -> pd.DataFrame:
    """Both peer comparisons and this CPU's matmul rate; writes peers.csv, peers_ratios.csv and
    peers_ceiling_share.csv (each side's training rate against that rate) under ``out_dir``."""
    require_peers()
    size = QUICK if quick else FULL
    threads = threads or torch.get_num_threads()
    report(f"bench --peers: {threads} torch thread{'s' if threads > 1 else ''}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = bench.bench_config(bench.QUICK if quick else bench.FULL)
    for task in ("viggo", "gsm8k"):
        config["tasks"][task]["limit"] = {"train": size.train_rows, "validation": 8, "test": max(size.eval_rows, 8)}
    found = []
    with tempfile.TemporaryDirectory(prefix="tunebench-peers-") as tmp, bench._threads(threads):
        work = Path(tmp)
        data_dirs = bench.prepare_data(config, ("viggo", "gsm8k"), work / "data")
        steps = [
            ("ceiling", lambda: bench.matmul_ceiling(bench.QUICK if quick else bench.FULL)),
            ("peer training", lambda: training(config, data_dirs, size, work / "train")),
            ("peer evaluation", lambda: evaluation(config, data_dirs, size, work / "eval")),
        ]
        for name, action in steps:
            report(f"bench --peers: {name} ...")
            found += action()
            pd.DataFrame(found).to_csv(out_dir / "peers.csv", index=False)  # each section as soon as it is done
    frame = pd.DataFrame(found)
    table = bench.ratios(frame, REFERENCES)
    table.to_csv(out_dir / "peers_ratios.csv", index=False)
    share = bench.ceiling_share(frame, ("peer training",))
    share.to_csv(out_dir / "peers_ceiling_share.csv", index=False)
    # Where bfloat16 matmuls are emulated, a share of their rate only restates the emulation's slowness.
    native = bool(bench.reduced_precisions())
    for _, row in share.iterrows():
        bf16 = f"{row['share_of_bf16_ceiling']:.0%} of the bfloat16" if native else "bfloat16 emulated, so not the"
        report(
            f"bench --peers: {row['variant']}, {row['case']}: {row['gflops']:.1f} GFLOP per "
            f"{'CPU second' if row['metric'] == CPU else 'second'}, {row['share_of_float32_ceiling']:.0%} of the "
            f"float32 matmul rate ({bf16} ceiling)"
        )
    return table
