"""``tunebench bench``: the hot paths measured side by side, in one process, on the same data.

Each comparison runs its variants back to back, ``repeats`` times, and reports the median with the
spread (min–max) and the ratio to a named reference variant, so a ratio is measured under one load,
one thermal state and one library build. Nothing here is asserted: the numbers are printed, written
to ``results/bench/*.csv`` and drawn in one figure; tests only check that ``--quick`` runs.

Comparisons (every one uses the code the workflow runs):

``training``   batch layouts (packing, pad_to 512, pad to longest) on ViGGO and GSM8K, LoRA and full:
               useful (non-padding) tokens/s, and the per-token losses of the same examples compared
``precision``  float32 against bfloat16 autocast for LoRA, QLoRA and full fine-tuning (one process,
               no ZeRO): tokens/s and validation perplexity after the same steps
``generation`` the batch-invariant decoder at batch 1, 8, 16 and 32 in float32 and bfloat16, and
               transformers' ``generate``: examples/s, tokens/s, share of outputs identical to batch 1;
               validation perplexity with the weights in float32 and in bfloat16
``sql``        the SQLite test-suite scorer against sqlglot's Python executor: examples/s, agreement
``optimizer``  AdamW's fused kernel against its per-tensor loop, LoRA and full: tokens/s, weights compared
``compile``    eager decoder layers against compiled ones (training.compile), full and LoRA: useful tokens
               per CPU second, compile seconds, losses compared
``data``       generated multiplication rows/s and the prepare time of every task
``ceiling``    this CPU's matmul rate in float32 and bfloat16, which the training rates are set against
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import config as tb_config
from .. import tasks
from ..stages import dataset, formats, models
from ..stages.train import batching
from ..tasks import data
from ..util import hardware

MODEL = "smollm2-135m"
#: Rates per second of this process's CPU time: steadier than wall time on a machine other jobs share.
CPU_RATE = "useful tokens per CPU second"
CPU_CEILING = "GFLOP per CPU second"
LAYOUTS = ("packing", "pad_to", "pad_to_longest")


@dataclass(frozen=True)
class Size:
    """How much each comparison does; ``quick`` is for the test that checks the command runs."""

    repeats: int
    train_steps: int
    train_rows: int
    prompts: int
    new_tokens: int
    batch_sizes: tuple[int, ...]
    sql_rows: int
    data_rows: int
    matmul: int
    loss_examples: int  # examples whose per-token losses the layouts are compared on (float64 forwards)


# Fields in order: repeats, train_steps, train_rows, prompts, new_tokens, batch_sizes, sql_rows, data_rows, matmul,
# loss_examples.
FULL = Size(2, 2, 64, 32, 16, (1, 8, 16, 32), 60, 20_000, 1024, 6)  # within a quarter of an hour on two cores
QUICK = Size(1, 1, 16, 4, 4, (1, 4), 6, 500, 256, 2)  # enough to see that every comparison runs


def reduced_precisions() -> tuple[str, ...]:
    """The bfloat16 variants this CPU can measure: none where it has no native bfloat16 matmul (AVX512_BF16 or
    AMX). There oneDNN emulates bfloat16 at about a hundredth of the float32 rate (the ceiling comparison
    shows it), so one training step would take most of an hour and say only that emulation is slow."""
    return ("bfloat16",) if hardware.training_dtype("auto") != "float32" else ()


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = action()
    return time.perf_counter() - began, result


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "low": min(values), "high": max(values)}


@contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bench_config(size: Size) -> dict:
    """The demo config, cut to the bench's rows, validated."""
    config = tb_config.load(tb_config.ROOT / "config" / "demo.yaml")
    for task in ("viggo", "gsm8k", "sql"):
        config["tasks"][task]["limit"] = {"train": size.train_rows, "validation": 8, "test": max(size.prompts, 8)}
    return config


def prepare_data(config: Mapping, tasks_needed, root: Path) -> dict[str, Path]:
    """Prepared splits of ``tasks_needed`` under ``root`` (through the data stage's own code)."""
    found = {}
    for task in tasks_needed:
        prepared, manifest = dataset.prepare(task, config)
        directory = root / task
        dataset.write(directory, prepared, manifest)
        found[task] = directory
    return found


def _trainer(
    config: Mapping, task: str, method: str, data_dir: Path, out: Path, fmt: str = "special_tokens", **training: Any
):
    """The workflow's own training loop object for one run in prompt format ``fmt``, with ``training`` keys
    overridden; eager layers unless ``compile`` is given, so each comparison but ``compile`` varies one thing."""
    from accelerate.state import AcceleratorState

    from ..stages.train import job as tb_job
    from ..stages.train import loop

    settings = copy.deepcopy(dict(config))
    settings["training"] = {**settings["training"], "compile": False, **training}
    run = {"task": task, "models": [MODEL], "methods": [method], "format": fmt}
    settings["experiments"] = {"finetune": [run], "baselines": []}
    settings = tb_config.validate(settings)
    AcceleratorState._reset_state(True)
    job = tb_job.resolve(settings, task, MODEL, method, out, data_dir)
    job = dataclasses.replace(job, launch=False)  # one process: the bench compares kernels, not launchers
    return loop.Trainer(job)


def _steps(trainer, steps: int) -> tuple[float, int]:
    """Seconds and real tokens of ``steps`` optimizer steps of the first epoch's batches."""
    plan = trainer.plans[1]
    seconds, tokens = 0.0, 0
    for step in range(min(steps, len(plan))):
        elapsed, done = _timed(lambda: trainer.step(plan, step))
        seconds, tokens = seconds + elapsed, tokens + int(done["tokens"])
    return seconds, tokens


def _example_losses(trainer, examples, layout: str) -> list[float]:
    """Per-token NLL of each example, computed in ``layout`` rows with the current weights.

    The forward runs on a float64 copy of the model: the layouts differ in matmul shapes, so in float32
    their sums round differently (about 1e-5 on these losses); in float64 only a masking or position
    error could still separate them.
    """
    rows = batching.layout_rows(examples, layout, trainer.training["max_length"])
    losses: list[float] = []
    model = copy.deepcopy(trainer.model).double().eval()
    with torch.no_grad():
        for row in rows:
            batch = batching.collate(
                [row],
                trainer.tokenizer.pad_token_id,
                layout,
                trainer.training["pad_to"] if layout == "pad_to" else None,
            )
            logits = model(**batching.model_inputs(batch, layout)).logits[0]
            nll = torch.nn.functional.cross_entropy(
                logits, batch["labels"][0], ignore_index=batching.IGNORE, reduction="none"
            )
            start = 0
            for example in row:
                end = start + len(example.input_ids)
                losses += [float(v) for v, label in zip(nll[start:end], example.labels) if label != batching.IGNORE]
                start = end
    return losses


def training(config: Mapping, data_dirs: Mapping[str, Path], size: Size, work: Path) -> list[dict]:
    rows = []
    for task, method in [(task, method) for task in ("viggo", "gsm8k") for method in ("lora", "full")]:
        reference_losses = None
        for layout in ("pad_to_longest", "pad_to", "packing"):
            rates = []
            for repeat in range(size.repeats):
                trainer = _trainer(
                    config,
                    task,
                    method,
                    data_dirs[task],
                    work / f"t-{task}-{method}-{layout}-{repeat}",
                    batching=layout,
                    pad_to=512,
                    max_length=512,
                    dtype="float32",
                    batch_size=2,
                )
                if repeat == 0:
                    losses = _example_losses(trainer, trainer.examples["train"][: size.loss_examples], layout)
                seconds, tokens = _steps(trainer, size.train_steps)
                rates.append(tokens / seconds)
            if reference_losses is None:
                reference_losses = losses
            agreement = (
                max(abs(a - b) for a, b in zip(losses, reference_losses))
                if len(losses) == len(reference_losses)
                else float("nan")
            )
            rows.append(
                {
                    "comparison": "training",
                    "case": f"{task} {method}",
                    "variant": layout,
                    "metric": "useful tokens/s",
                    **_summary(rates),
                    "max_loss_difference": agreement,
                }
            )
    return rows


def precision(config: Mapping, data_dirs: Mapping[str, Path], size: Size, work: Path) -> list[dict]:
    rows = []
    autocast = ("bfloat16_autocast",) if reduced_precisions() else ()
    for method in ("lora", "qlora", "full"):
        for dtype in ("float32", *autocast):
            rates, perplexities = [], []
            for repeat in range(size.repeats):
                trainer = _trainer(
                    config,
                    "viggo",
                    method,
                    data_dirs["viggo"],
                    work / f"p-{method}-{dtype}-{repeat}",
                    dtype=dtype,
                    batching="packing",
                    max_length=256,
                    batch_size=2,
                )
                seconds, tokens = _steps(trainer, size.train_steps)
                rates.append(tokens / seconds)
                perplexities.append(trainer.validate()[1])
            rows.append(
                {
                    "comparison": "precision",
                    "case": method,
                    "variant": dtype,
                    "metric": "tokens/s",
                    **_summary(rates),
                    "validation_perplexity": statistics.median(perplexities),
                    "params": sum(p.numel() for p in trainer.built.model.parameters()),
                }
            )
    return rows


def optimizer(config: Mapping, data_dirs: Mapping[str, Path], size: Size, work: Path) -> list[dict]:
    """AdamW's fused kernel (the training default) against its per-tensor loop (torch's default on a CPU),
    in the precision ``training.dtype: auto`` picks here: tokens/s of the same steps, and the first step's
    updated weights compared."""
    rows = []
    for method in ("lora", "full"):
        weights = {}
        for fused in (False, True):
            rates = []
            for repeat in range(size.repeats):
                trainer = _trainer(config, "viggo", method, data_dirs["viggo"], work / f"o-{method}-{fused}-{repeat}")
                for group in trainer.optimizer.optimizer.param_groups:
                    group["fused"] = fused
                seconds, tokens = _steps(trainer, size.train_steps)
                rates.append(tokens / seconds)
            trained = [p for p in trainer.model.parameters() if p.requires_grad]
            weights[fused] = [p.detach().clone() for p in trained]
            rows.append(
                {
                    "comparison": "optimizer",
                    "case": f"{method} {trainer.training['dtype']}",
                    "variant": "AdamW fused" if fused else "AdamW per-tensor",
                    "metric": "tokens/s",
                    **_summary(rates),
                    "params": sum(p.numel() for p in trainer.built.model.parameters()),
                }
            )
        difference = max(float((a - b).abs().max()) for a, b in zip(weights[False], weights[True]))
        rows[-1]["max_weight_difference"] = rows[-2]["max_weight_difference"] = difference
    return rows


def compiling(config: Mapping, data_dirs: Mapping[str, Path], size: Size, work: Path) -> list[dict]:
    """Eager decoder layers against compiled ones (``training.compile``), full and LoRA, ViGGO packed as the
    demo trains it: useful tokens per CPU second of the steps after the first, the first repeat's first step's
    extra wall seconds (compiling, for the compiled variant), and the per-token losses of the same steps compared."""
    rows = []
    for method in ("full", "lora"):
        losses = {}
        for compiled in (False, True):
            rates, first = [], []
            for repeat in range(size.repeats):
                out = work / f"c-{method}-{compiled}-{repeat}"
                trainer = _trainer(config, "viggo", method, data_dirs["viggo"], out, compile=compiled, dtype="float32")
                plan = trainer.plans[1]
                steps = []
                for step in range(min(size.train_steps + 1, len(plan))):
                    wall, cpu = time.perf_counter(), time.process_time()
                    done = trainer.step(plan, step)
                    steps.append((time.perf_counter() - wall, time.process_time() - cpu, done))
                later = steps[1:] or steps
                rates.append(sum(d["tokens"] for _, _, d in later) / sum(c for _, c, _ in later))
                first.append(steps[0][0] - statistics.median(w for w, _, _ in later))
                losses[compiled] = [d["nll"] / d["targets"] for _, _, d in steps]
            rows.append(
                {
                    "comparison": "compile",
                    "case": f"viggo {method} float32",
                    "variant": "compiled layers" if compiled else "eager",
                    "metric": CPU_RATE,
                    **_summary(rates),
                    # Compiled code is kept for the process, so only the first repeat compiles.
                    "first_step_extra_s": first[0],
                    "params": sum(p.numel() for p in trainer.built.model.parameters()),
                }
            )
        difference = max(abs(a - b) for a, b in zip(losses[False], losses[True]))
        rows[-1]["max_loss_difference"] = rows[-2]["max_loss_difference"] = difference
    return rows


def generation(config: Mapping, data_dirs: Mapping[str, Path], size: Size) -> list[dict]:
    """Three views of the same decodes: batch size (against batch 1), precision (bfloat16 against
    float32 at the same batch) and engine (transformers' generate against the batch-invariant decoder)."""
    from ..stages.generate import generate

    # Loaded in float32 (the bfloat16 variants cast down from it), whatever this CPU's default is.
    as_float32 = {**config, "training": {**config["training"], "dtype": "float32"}}
    model, tokenizer = models.load_for_inference(as_float32, MODEL, role="chat")
    task = tasks.get("viggo")
    test = data.read_split(data_dirs["viggo"], "test")[: size.prompts]
    prompts = [
        formats.encode_prompt(tokenizer, formats.render_prompt("instruction", task, row, tokenizer)) for row in test
    ]
    largest = size.batch_sizes[-1]
    dtypes = ("float32", *reduced_precisions())
    variants = [(d, b, "batch_invariant") for d in dtypes for b in size.batch_sizes]
    variants.append(("float32", largest, "generate"))
    measured = {}
    for dtype, batch_size, decoder in variants:
        model = model.to(models.DTYPES[dtype])
        rates, token_rates = [], []
        for _ in range(size.repeats):
            seconds, (out, throughput) = _timed(
                lambda: generate(
                    model, tokenizer, prompts, max_new_tokens=size.new_tokens, batch_size=batch_size, decoder=decoder
                )
            )
            rates.append(len(prompts) / seconds)
            token_rates.append(throughput.generated_tokens / seconds)
        measured[(dtype, batch_size, decoder)] = (rates, statistics.median(token_rates), [g.text for g in out])

    def row(comparison, case, variant, key, against):
        rates, tokens_per_s, texts = measured[key]
        same = sum(a == b for a, b in zip(texts, measured[against][2])) / len(texts)
        return {
            "comparison": comparison,
            "case": case,
            "variant": variant,
            "metric": "examples/s",
            **_summary(rates),
            "tokens_per_s": tokens_per_s,
            "identical_to_reference": same,
        }

    rows = [
        row(
            "generation",
            f"{dtype} batch-invariant",
            f"batch {b}",
            (dtype, b, "batch_invariant"),
            (dtype, 1, "batch_invariant"),
        )
        for dtype in dtypes
        for b in size.batch_sizes
    ]
    rows += [
        row("decoding precision", f"batch {b}", dtype, (dtype, b, "batch_invariant"), ("float32", b, "batch_invariant"))
        for b in size.batch_sizes
        for dtype in dtypes
    ]
    rows += [
        row(
            "decoder",
            f"batch {largest} float32",
            name,
            ("float32", largest, name),
            ("float32", largest, "batch_invariant"),
        )
        for name in ("batch_invariant", "generate")
    ]
    return rows


def decoding_perplexity(config: Mapping, data_dirs: Mapping[str, Path], work: Path) -> list[dict]:
    """Validation perplexity of the untrained model (every token a target) with its weights in float32
    and in bfloat16: what holding the weights in bfloat16 for decoding costs in quality."""
    trainer = _trainer(
        config,
        "viggo",
        "full",
        data_dirs["viggo"],
        work / "decoding-perplexity",
        dtype="float32",
        batching="packing",
        max_length=512,
        batch_size=2,
        loss_on="all",
    )
    rows = []
    for dtype in ("float32", *reduced_precisions()):
        trainer.model.to(models.DTYPES[dtype])
        perplexity = trainer.validate()[1]
        rows.append(
            {
                "comparison": "decoding precision",
                "case": "validation perplexity",
                "variant": dtype,
                "metric": "perplexity",
                "median": perplexity,
                "low": perplexity,
                "high": perplexity,
            }
        )
    return rows


def sql_scoring(config: Mapping, data_dirs: Mapping[str, Path], size: Size) -> list[dict]:
    from ..tasks.scoring import sql as sql_scoring_module
    from ..tasks.scoring import sqlsuite

    test = data.read_split(data_dirs["sql"], "test") + data.read_split(data_dirs["sql"], "train")
    test = test[: size.sql_rows]
    # Half the predictions are the gold query, half a plausible mistake: both verdicts occur.
    predictions = [row["answer"] if i % 2 == 0 else row["answer"].replace("=", "<>", 1) for i, row in enumerate(test)]
    rows, verdicts = [], {}
    # The synthesised databases are shared by both executors (and cached): build them first, so the
    # timing is of execution and comparison alone.
    for row in test:
        sqlsuite.build_suite(row["context"], row["answer"].strip().rstrip(";").strip(), 3, 2.0)
    for executor in ("sqlite", "sqlglot"):
        rates = []
        for _ in range(size.repeats):
            seconds, found = _timed(
                lambda: [
                    sql_scoring_module.score(f"<SQL>{p}</SQL>", row, sql_executor=executor)["execution_accuracy"]
                    for p, row in zip(predictions, test)
                ]
            )
            rates.append(len(test) / seconds)
        verdicts[executor] = found
        rows.append(
            {
                "comparison": "sql",
                "case": "execution scoring",
                "variant": executor,
                "metric": "examples/s",
                **_summary(rates),
            }
        )
    both = [(a, b) for a, b in zip(verdicts["sqlite"], verdicts["sqlglot"]) if a is not None and b is not None]
    agreement = sum(a == b for a, b in both) / len(both) if both else float("nan")
    for row in rows:
        row |= {"agreement": agreement, "scored_by_both": len(both)}
    return rows


def data_preparation(config: Mapping, size: Size) -> list[dict]:
    from ..tasks import multiplication

    rows = []
    rates = []
    for repeat in range(size.repeats):
        seconds, _ = _timed(lambda: multiplication.generate(size.data_rows, (4, 4), repeat, 0.025, 0.0125))
        rates.append(size.data_rows / seconds)
    rows.append(
        {
            "comparison": "data",
            "case": "multiplication 4 × 4",
            "variant": "generate",
            "metric": "rows/s",
            **_summary(rates),
        }
    )
    for task in tasks.built_in():
        seconds = [_timed(lambda: dataset.prepare(task, config))[0] for _ in range(size.repeats)]
        rows.append(
            {"comparison": "data", "case": task, "variant": "prepare", "metric": "seconds", **_summary(seconds)}
        )
    return rows


def matmul_ceiling(size: Size) -> list[dict]:
    """GFLOP per second of wall time and per second of this process's CPU time (the measure that the
    per-CPU-second training rates are set against)."""
    rows = []
    for dtype in ("float32", "bfloat16"):
        a = torch.randn(size.matmul, size.matmul, dtype=models.DTYPES[dtype])
        b = torch.randn(size.matmul, size.matmul, dtype=models.DTYPES[dtype])
        torch.matmul(a, b)  # first call picks the kernel
        rates: dict[str, list[float]] = {"GFLOP/s": [], CPU_CEILING: []}
        for _ in range(max(3, size.repeats)):
            cpu = time.process_time()
            seconds, _ = _timed(lambda: [torch.matmul(a, b) for _ in range(5)])
            rates["GFLOP/s"].append(5 * 2 * size.matmul**3 / seconds / 1e9)
            rates[CPU_CEILING].append(5 * 2 * size.matmul**3 / (time.process_time() - cpu) / 1e9)
        for metric, values in rates.items():
            rows.append(
                {
                    "comparison": "ceiling",
                    "case": f"matmul {size.matmul}",
                    "variant": dtype,
                    "metric": metric,
                    **_summary(values),
                }
            )
    return rows


REFERENCES = {
    "training": "pad_to",
    "precision": "float32",
    "optimizer": "AdamW per-tensor",
    "sql": "sqlglot",
    "generation": "batch 1",
    "decoding precision": "float32",
    "decoder": "batch_invariant",
    "compile": "eager",
}


#: Columns that qualify a speed: agreement of losses, outputs or verdicts, and quality after the same steps.
EXTRA = (
    "max_loss_difference",
    "first_losses_ours",
    "first_losses_peer",
    "max_weight_difference",
    "first_step_extra_s",
    "validation_perplexity",
    "identical_to_reference",
    "agreement",
    "identical_prompts",
    "identical_outputs",
    "identical_answers",
    "equal_verdicts_where_answers_identical",
)


def ratios(frame: pd.DataFrame, references: Mapping[str, str] = REFERENCES) -> pd.DataFrame:
    """Each variant's median against its comparison's reference variant in the same case and metric (and spread)."""
    out = []
    for (comparison, case, _), group in frame.groupby(["comparison", "case", "metric"], sort=False):
        reference = references.get(comparison)
        base = group[group["variant"] == reference]
        for _, row in group.iterrows():
            ratio = row["median"] / base["median"].iloc[0] if not base.empty else float("nan")
            low = row["low"] / base["high"].iloc[0] if not base.empty else float("nan")
            high = row["high"] / base["low"].iloc[0] if not base.empty else float("nan")
            extra = {key: row[key] for key in EXTRA if key in row and pd.notna(row[key])}
            out.append(
                {
                    "comparison": comparison,
                    "case": case,
                    "variant": row["variant"],
                    "metric": row["metric"],
                    "median": row["median"],
                    "ratio": ratio,
                    "ratio_low": low,
                    "ratio_high": high,
                    "reference": reference or "",
                    **extra,
                }
            )
    return pd.DataFrame(out)


#: The comparisons whose rows are training rates with the model's parameter count (``params``).
TRAINING_RATES = ("precision", "optimizer", "compile")


def ceiling_share(frame: pd.DataFrame, comparisons: tuple[str, ...] = TRAINING_RATES) -> pd.DataFrame:
    """Training throughput of ``comparisons`` as a share of the CPU's float32 and bfloat16 matmul rates (6 FLOPs
    per parameter and token), per wall second or per CPU second as the training rate was measured."""
    ceilings = frame[frame["comparison"] == "ceiling"].set_index(["variant", "metric"])["median"]
    if ceilings.empty:
        return pd.DataFrame()
    rows = frame[frame["comparison"].isin(comparisons)].copy()
    per_cpu = rows["metric"] == CPU_RATE
    rows["gflops"] = rows["median"] * 6 * rows["params"] / 1e9
    # Where bfloat16 matmuls are emulated (no AVX512_BF16 or AMX), float32 is the rate training can reach.
    for dtype in ("bfloat16", "float32"):
        ceiling = per_cpu.map({True: ceilings[(dtype, CPU_CEILING)], False: ceilings[(dtype, "GFLOP/s")]})
        rows[f"share_of_{'bf16' if dtype == 'bfloat16' else dtype}_ceiling"] = rows["gflops"] / ceiling
    return rows[
        [
            "comparison",
            "case",
            "variant",
            "metric",
            "median",
            "gflops",
            "share_of_bf16_ceiling",
            "share_of_float32_ceiling",
        ]
    ]


def figure(table: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = table[table["reference"] != ""].dropna(subset=["ratio"])
    fig, ax = plt.subplots(figsize=(7.0, 0.9 + 0.28 * max(1, len(shown))))
    labels = [f"{r['comparison']}: {r['case']}, {r['variant']}" for _, r in shown.iterrows()]
    ax.barh(
        range(len(shown)),
        shown["ratio"],
        color="#4c72b0",
        xerr=[shown["ratio"] - shown["ratio_low"], shown["ratio_high"] - shown["ratio"]],
        capsize=2,
    )
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("Ratio to the comparison's reference (median; whiskers: spread over repeats)")
    ax.set_title("tunebench bench: hot paths, side by side")
    fig.savefig(out, bbox_inches="tight", dpi=150)
    plt.close(fig)


def run(
    out_dir: Path, quick: bool = False, threads: int | None = None, report: Callable[[str], None] = print
) -> pd.DataFrame:
    """Every comparison; writes one CSV per comparison, ratios.csv and bench.png under ``out_dir``."""
    size = QUICK if quick else FULL
    threads = threads or torch.get_num_threads()
    report(f"bench: {threads} torch thread{'s' if threads > 1 else ''}")
    if not reduced_precisions():
        report("bench: no native bfloat16 on this CPU (AVX512_BF16 or AMX): bfloat16 variants are not measured")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = bench_config(size)
    found = []
    with tempfile.TemporaryDirectory(prefix="tunebench-bench-") as tmp, _threads(threads):
        work = Path(tmp)
        data_dirs = prepare_data(config, ("viggo", "gsm8k", "sql"), work / "data")
        steps = [
            ("ceiling", lambda: matmul_ceiling(size)),
            ("training", lambda: training(config, data_dirs, size, work)),
            ("precision", lambda: precision(config, data_dirs, size, work)),
            ("optimizer", lambda: optimizer(config, data_dirs, size, work)),
            ("compile", lambda: compiling(config, data_dirs, size, work)),
            ("generation", lambda: generation(config, data_dirs, size) + decoding_perplexity(config, data_dirs, work)),
            ("sql", lambda: sql_scoring(config, data_dirs, size)),
            ("data", lambda: data_preparation(config, size)),
        ]
        for name, action in steps:
            report(f"bench: {name} ...")
            rows = action()
            pd.DataFrame(rows).to_csv(out_dir / f"{name}.csv", index=False)
            found += rows
    frame = pd.DataFrame(found)
    table = ratios(frame)
    table.to_csv(out_dir / "ratios.csv", index=False)
    share = ceiling_share(frame)
    if not share.empty:
        share.to_csv(out_dir / "ceiling_share.csv", index=False)
    figure(table, out_dir / "bench.png")
    return table
