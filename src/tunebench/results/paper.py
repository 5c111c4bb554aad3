"""The paper: LaTeX sources in ``paper/`` plus include files generated here from ``results/``.

The hand-written sources hold prose only; every number reaches the PDF through a generated file:
``generated/numbers.tex`` defines ``\\tbset{key}{value}`` for the values the prose names with
``\\tb{key}`` (an unknown key stops the build), and the other generated files carry the sentences,
tables and figures that depend on which runs exist. :func:`write_sources` assembles a build
directory; :func:`compile_pdf` runs ``latexmk`` on it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from .. import config as tb_config
from ..stages.train import methods as tb_methods
from ..tasks import TaskSet
from ..util import fileio
from ..util.errors import UserError
from . import METHODS, Output, Plan, labels, plan
from . import claims as tb_claims
from . import published as tb_published
from . import tables as tb_tables
from .text import cost_unit, hours, latex_escape

SOURCE_DIR = tb_config.ROOT / "paper"
MAIN = "tunebench.tex"
TEX_PACKAGES = "latexmk texlive-latex-base texlive-latex-recommended texlive-fonts-recommended"


class LatexError(UserError, RuntimeError):
    """LaTeX is missing or failed; the message says what to install or which log to read."""


def tex(text) -> str:
    return latex_escape(str(text))


def pct(value: float) -> str:
    return r"n/a" if value is None or not math.isfinite(value) else f"{value * 100:.1f}\\,\\%"


def points(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return ("+" if value >= 0 else "$-$") + f"{abs(value):.1f}"


def interval(row: pd.Series) -> str:
    if pd.isna(row["ci_low"]) or pd.isna(row["ci_high"]):
        return pct(row["value"])
    return f"{pct(row['value'])} [{row['ci_low'] * 100:.1f}, {row['ci_high'] * 100:.1f}]"


def join(items: list[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def number_word(n: int) -> str:
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return words[n] if 0 <= n < len(words) else str(n)


def _sizes(metrics: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(metrics.sort_values("params_b", kind="stable")["size"]))


# -- values named by the hand-written prose ------------------------------------------------------


def _comparisons(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each single-stage special-token fine-tuned run beside the default prompted run of its model."""
    primary = metrics[metrics["primary"]]
    base = primary[(primary["stage"] == "baseline") & (primary["variant"] == "default")]
    tuned = primary[(primary["stage"] == "finetuned") & (primary["format"] == "special_tokens")]
    pairs = tuned.merge(
        base[["task", "model", "value", "ci_low", "ci_high", "prompt_tokens_mean"]],
        on=["task", "model"],
        suffixes=("", "_base"),
    )
    pairs["gain"] = (pairs["value"] - pairs["value_base"]) * 100
    return pairs


def numbers(config: tb_config.Experiment, config_files: Iterable[str], metrics: pd.DataFrame) -> dict[str, str]:
    values: dict[str, str] = {}
    published = tb_published.load()
    for _, row in published.iterrows():
        value = row["value"]
        values[f"pub-{row['id']}"] = f"{value:,.0f}" if value >= 1000 else f"{value:g}"
        if row["model"]:
            values[f"pubmodel-{row['id']}"] = tex(row["model"])
    evaluation = config["evaluation"]
    finetune = config.finetune
    values |= {
        "config": tex(", ".join(str(Path(f)) for f in config_files)),
        "seed": str(config["seed"]),
        "bootstrap-samples": f"{evaluation['bootstrap_samples']:,}",
        "confidence": f"{evaluation['confidence'] * 100:g}",
        "n-tasks": number_word(metrics["task"].nunique()),
        "models": (
            f"{number_word(metrics['model'].nunique())} model size" + ("s" if metrics["model"].nunique() > 1 else "")
        ),
        "n-finetuned": str(len(metrics.drop_duplicates(["task", "model", "run"]).query("stage != 'baseline'"))),
        "n-baselines": str(len(metrics.drop_duplicates(["task", "model", "run"]).query("stage == 'baseline'"))),
        "n-trained": str(len(finetune)),
        "sizes": tex(join(_sizes(metrics))),
        "max-epochs": str(max((run.training["epochs"] for run in finetune), default=0)),
        "test-examples": f"{int(metrics.drop_duplicates(['task', 'model', 'run'])['n_examples'].sum()):,}",
    }
    runs = metrics.drop_duplicates(["task", "model", "run"])
    trained = runs[runs["stage"] != "baseline"]
    values["train-device-hours"] = hours(float(trained["device_hours"].sum())) if not trained.empty else "0"
    values["train-unit"] = cost_unit(trained["device_kind"]) if not trained.empty else "device-hours"
    values["eval-hours"] = hours(float(runs["eval_wall_time_s"].fillna(0).sum()) / 3600)
    return values


def numbers_tex(values: Mapping[str, str]) -> str:
    lines = ["% Generated by `tunebench paper` from results/; every value the prose names with \\tb{key}."]
    lines += [f"\\tbset{{{key}}}{{{value}}}" for key, value in sorted(values.items())]
    return "\n".join(lines) + "\n"


# -- generated prose -----------------------------------------------------------------------------


def headline(metrics: pd.DataFrame, known: TaskSet) -> str:
    pairs = _comparisons(metrics).dropna(subset=["gain"])
    if pairs.empty:
        return "No fine-tuned model in these results has a prompted baseline of the same model to compare with."
    better = int((pairs["gain"] > 0).sum())
    clear = int((pairs["ci_low"] > pairs["ci_high_base"]).sum())
    best = pairs.loc[pairs["gain"].idxmax()]
    if better == 0:
        return (
            f"Over {len(pairs)} pairs of a fine-tuned model and the same model prompted, fine-tuning raised the "
            f"task's primary metric in none; the median change was {points(pairs['gain'].median())} points."
        )
    return (
        f"Over {len(pairs)} pairs of a fine-tuned model and the same model prompted, fine-tuning raised the "
        f"task's primary metric in {better}, with intervals that do not overlap in {clear}; the median change was "
        f"{points(pairs['gain'].median())} points, and the largest, {points(best['gain'])} points, came from "
        f"{tex(labels.method(best['method']))} on {tex(labels.task(best['task'], known))} "
        f"({pct(best['value_base'])} to {pct(best['value'])})."
    )


def task_findings(metrics: pd.DataFrame, task: str, known: TaskSet) -> str:
    frame = metrics[(metrics["task"] == task) & metrics["primary"]]
    metric = labels.metric(frame["metric"].iloc[0]).lower()
    sentences = [f"The primary metric of {tex(labels.task(task, known))} is {tex(metric)}."]
    pairs = _comparisons(metrics)
    pairs = pairs[pairs["task"] == task]
    for model in frame.drop_duplicates("model").sort_values("params_b", kind="stable")["model"]:
        own = frame[frame["model"] == model]
        name = f"{tex(model)} ({tex(own['size'].iloc[0])})"
        base = own[(own["stage"] == "baseline") & (own["variant"] == "default")]
        tuned = pairs[pairs["model"] == model].sort_values("method", key=lambda s: s.map(METHODS.index), kind="stable")
        parts = [
            f"{tex(labels.method(r['method']))} reaches {interval(r)} ({points(r['gain'])} points)"
            for _, r in tuned.iterrows()
        ]
        if not base.empty and parts:
            sentences.append(f"Prompted, {name} scores {interval(base.iloc[0])}; after fine-tuning, {join(parts)}.")
        elif not base.empty:
            sentences.append(f"{name[0].upper() + name[1:]} was only prompted and scores {interval(base.iloc[0])}.")
        for _, variant in own[(own["stage"] == "baseline") & (own["variant"] != "default")].iterrows():
            sentences.append(
                f"With the {tex(variant['variant'].replace('_', ' '))} prompt it scores {interval(variant)}."
            )
        if base.empty:
            solo = own[own["stage"] == "finetuned"]
            if not solo.empty:
                listed = [f"{interval(r)} with {tex(labels.method(r['method']))}" for _, r in solo.iterrows()]
                sentences.append(f"{name} has no prompted baseline; fine-tuned, it scores {join(listed)}.")
    pairs = pairs.dropna(subset=["value", "value_base"])
    if not pairs.empty:
        clear = int((pairs["ci_low"] > pairs["ci_high_base"]).sum())
        sentences.append(
            f"In {clear} of {len(pairs)} comparisons the fine-tuned interval lies wholly above the prompted one."
        )
        best = pairs.loc[pairs["value"].idxmax()]
        refs = tb_published.reference_lines(tb_published.load(), task, frame["metric"].iloc[0])
        for _, ref in refs.iterrows():
            side = "above" if best["value"] * 100 > ref["value"] else "below"
            sentences.append(
                f"The study put {tex(ref['model'])} at about {ref['value']:g}\\,\\% on this metric; our best "
                f"fine-tuned run ({pct(best['value'])}) is {side} that line."
            )
    return " ".join(sentences)


def _figure(figure: Output, label: str | None = None) -> str:
    """The figure float of an output; ``label`` replaces the output's name in its \\label."""
    return (
        f"\\begin{{figure}}[tbp]\n\\centering\n\\fitbox{{\\includegraphics{{generated/figures/{figure.name}.pdf}}}}\n"
        f"\\caption{{{tex(figure.caption)}}}\n\\label{{fig:{label or figure.name}}}\n\\end{{figure}}\n"
    )


def _table(output: Output, table: tb_tables.Table) -> str:
    size = "\\footnotesize" if len(table.frame) > 24 else "\\small"
    return (
        f"\\begin{{table}}[tbp]\n\\centering\n\\caption{{{tex(table.caption)}}}\n\\label{{tab:{output.name}}}\n{size}\n"
        f"\\fitbox{{\\input{{generated/tables/{output.name}.tex}}}}\n\\end{{table}}\n"
    )


def results_tex(metrics: pd.DataFrame, chosen: Plan) -> str:
    known = chosen.known
    parts = []
    for task in chosen.tasks:
        output = chosen.drawing("table", "task", task)
        table = tb_tables.build(output, metrics, known=chosen.known)
        name = tex(labels.task(task, known))
        parts.append(
            f"\\subsection{{{name}}}\\label{{sec:{task}}}\n{task_findings(metrics, task, known)} "
            f"Figure~\\ref{{fig:{task}}} shows every metric and Table~\\ref{{tab:{task}}} lists the values.\n"
        )
        parts.append(_figure(chosen.drawing("figure", "task", task), label=task))
        parts.append(_table(output, table))
    return "\n".join(parts)


def published_tex(metrics: pd.DataFrame, chosen: Plan) -> str:
    output = chosen.drawing("table", "published")
    table = tb_tables.build(output, metrics, known=chosen.known)
    compared = table.frame
    same = int((compared["match"] == "same setting").sum())
    sizes = _sizes(metrics)
    text = (
        f"Table~\\ref{{tab:published}} sets {len(compared)} figures stated by the case studies beside the same "
        f"quantity measured here; {same} of them were measured in the study's own setting. The others differ in "
        "model size, method or hardware, as the last column says, and show the direction of an effect rather "
        "than replicate its size."
    )
    if not any(size in set(tb_published.load()["size"]) for size in sizes):
        text += (
            f" None of our model sizes ({tex(join(sizes))}) is one the studies used, so every difference in "
            "accuracy mixes the effect of scale with that of the method."
        )
    return text + "\n\n" + _table(output, table) + f"\n{tex(table.note)}\n"


def cost_tex(metrics: pd.DataFrame, chosen: Plan) -> str:
    output = chosen.drawing("table", "cost")
    table = tb_tables.build(output, metrics, known=chosen.known)
    pairs = _comparisons(metrics)
    text = "Table~\\ref{tab:cost} lists what each model cost to train and what each query costs to answer. "
    if not pairs.empty and pairs["prompt_tokens_mean"].notna().any():
        base_tokens = pairs.drop_duplicates(["task", "model"])["prompt_tokens_mean_base"].mean()
        tuned_tokens = pairs["prompt_tokens_mean"].mean()
        text += (
            f"The prompted baselines carry their instructions and worked examples in every query, "
            f"{base_tokens:,.0f} prompt tokens on average, against {tuned_tokens:,.0f} for the fine-tuned models, "
            f"which have learned the task and need only its input: {base_tokens / tuned_tokens:.1f} times fewer "
            "tokens to read per answer. "
        )
    parts = [text + f"{tex(table.note)}\n", _table(output, table)]
    figure = chosen.drawing("figure", "gain_vs_cost")
    if figure:
        parts.append("Figure~\\ref{fig:gain_vs_cost} plots each model's gain against its training cost.\n")
        parts.append(_figure(figure))
    return "\n".join(parts)


def extras_tex(metrics: pd.DataFrame, curves: pd.DataFrame, chosen: Plan) -> str:
    known = chosen.known
    parts = []
    for task in chosen.two_stage:
        primary = metrics[(metrics["task"] == task) & metrics["primary"]]
        staged = primary[primary["stage"] == "two_stage"]
        sentences = []
        for _, run in staged.iterrows():
            single = primary[
                (primary["model"] == run["model"])
                & (primary["stage"] == "finetuned")
                & (primary["method"] == run["method"])
                & (primary["format"] == run["format"])
            ]
            first = labels.task(run["init_from"].split("/")[0], known)
            if not single.empty:
                delta = (run["value"] - single["value"].iloc[0]) * 100
                sentences.append(
                    f"For {tex(run['model'])} with {tex(labels.method(run['method']))}, training on "
                    f"{tex(first)} first gives {interval(run)} against {interval(single.iloc[0])} "
                    f"from {tex(labels.task(task, known))} alone ({points(delta)} points)."
                )
        parts.append(
            f"\\subsection{{Two-stage training on {tex(labels.task(task, known))}}}\n"
            + " ".join(sentences)
            + f" Figure~\\ref{{fig:two_stage_{task}}} shows the three stages side by side.\n"
        )
        parts.append(_figure(chosen.drawing("figure", "two_stage", task)))
    for task in chosen.ablations:
        output = chosen.drawing("table", "ablation_format", task)
        table = tb_tables.build(output, metrics, known=chosen.known)
        frame = metrics[(metrics["task"] == task) & (metrics["stage"] == "finetuned") & metrics["primary"]]
        sentences = []
        for (model, method), part in frame.groupby(["model", "method"], sort=False):
            if part["format"].nunique() < 2:
                continue
            by_format = {row["format"]: row for _, row in part.iterrows()}
            listed = [f"{interval(row)} with the {tex(labels.fmt(fmt))} format" for fmt, row in by_format.items()]
            sentences.append(
                f"{tex(model)} with {tex(labels.method(method))} scores {join(listed)} on "
                f"{tex(labels.metric(part['metric'].iloc[0]).lower())}."
            )
        parts.append(
            "\\subsection{Special tokens or an instruction?}\nA reader of the first study asked whether its "
            "special tokens still matter once the task is described in plain words. We trained the same model "
            "and method both ways. "
            + " ".join(sentences)
            + f" Figure~\\ref{{fig:ablation_format_{task}}} and Table~\\ref{{tab:ablation_format_{task}}} give every "
            "metric.\n"
        )
        parts.append(_figure(chosen.drawing("figure", "ablation_format", task)))
        parts.append(_table(output, table))
    curves_figure = chosen.drawing("figure", "learning_curves")
    if curves_figure and not curves.empty:
        runs = curves.groupby(["task", "model", "run"], sort=False)
        first = runs["validation_perplexity"].first()
        best = curves[curves["selected"]].set_index(["task", "model", "run"])["validation_perplexity"]
        last_epoch = runs["epoch"].max()
        chosen_epoch = curves[curves["selected"]].set_index(["task", "model", "run"])["epoch"]
        at_end = int((chosen_epoch.reindex(last_epoch.index) == last_epoch).sum())
        hint = (
            ", which suggests that more epochs would have helped them"
            if at_end
            else "; every run passed its lowest validation perplexity before training ended"
        )
        parts.append(
            "\\subsection{Learning curves}\nAfter every epoch the validation perplexity is measured and the "
            "checkpoint with the lowest value is the one evaluated. Across the "
            f"{len(first)} training runs, the perplexity after the first epoch averages "
            f"{first.mean():.2f} and at the selected checkpoint {best.reindex(first.index).mean():.2f}; "
            f"{at_end} of the {len(first)} runs selected their last epoch{hint}. "
            "Figure~\\ref{fig:learning_curves} shows every run.\n"
        )
        parts.append(_figure(curves_figure))
    return "\n".join(parts)


def _describe_source(source: Mapping | None) -> str:
    if not source:
        return "same as base"
    if source.get("hub"):
        return f"hub {source['hub']}"
    if source.get("local"):
        return "local directory"
    if source.get("gguf_package"):
        return f"GGUF in {source['gguf_package']}"
    return "random tiny Llama"


def _tabular(spec, header, rows):
    body = "\n".join(" & ".join(row) + r" \\" for row in rows)
    return (
        f"\\begin{{tabular}}{{@{{}}{spec}@{{}}}}\n\\toprule\n"
        + " & ".join(header)
        + " \\\\\n\\midrule\n"
        + body
        + "\n\\bottomrule\n\\end{tabular}"
    )


def data_tex(manifests: Mapping[str, Mapping], known: TaskSet) -> str:
    """The data table: each task's rows per split, what the data stage dropped, and its overlap with the test split."""
    if not manifests:
        return ""
    rows, policies = [], set()
    for task, manifest in manifests.items():
        overlap = manifest["overlap"]
        policies.add(overlap["policy"])
        in_test = sum(overlap["test_overlap"][split]["input"]["normalized"] for split in ("train", "validation"))
        repeats = sum(counts["normalized"] for counts in overlap["duplicates"].values())
        rows.append(
            [tex(labels.task(task, known))]
            + [f"{manifest['rows'][split]:,}" for split in ("train", "validation", "test")]
            + [f"{manifest['bad_rows_total']:,}", f"{repeats:,}", f"{in_test:,}", f"{overlap['dropped_total']:,}"]
        )
    policy = " or ".join(sorted(policies))
    header = ["Task", "Train", "Validation", "Test", "Malformed", "Repeats", "Inputs in test", "Dropped"]
    return (
        "\\paragraph{Data.} The data stage checks each source file against its published release, counts rows "
        "that repeat another of their split and training inputs that also occur in the test split, and "
        + ("keeps those out of training" if policy == "drop" else f"under data.overlap = {tex(policy)} acts on them")
        + " (Table~\\ref{tab:data}).\n\n"
        "\\begin{table}[tbp]\n\\centering\n\\caption{Data: rows per split after filters and limits; malformed "
        "records left out; rows repeating another of their split; train and validation rows whose input is also a "
        "test input (case and whitespace ignored); train and validation rows dropped for either reason "
        f"(data.overlap is {tex(policy)}).}}\n\\label{{tab:data}}\n\\small\n\\fitbox{{"
        + _tabular("lrrrrrrr", header, rows)
        + "}\n\\end{table}\n"
    )


def read_manifests(data_dir: Path, task_names: Iterable[str]) -> dict[str, dict]:
    """The data stage's manifest of each task, in the given order; a missing one says to run that stage."""
    found = {}
    for task in task_names:
        path = Path(data_dir) / task / "manifest.json"
        try:
            found[task] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(
                f"{path} is missing; run `tunebench data {task}` (or the workflow's data rule) first."
            ) from None
    return found


def setup_tex(config: tb_config.Experiment, metrics: pd.DataFrame) -> str:
    used = list(dict.fromkeys(metrics["model"]))
    model_rows = [
        [
            tex(name),
            tex(config["models"][name]["size"]),
            tex(
                f"{config['models'][name].get('params_b'):g}"
                if config["models"][name].get("params_b") is not None
                else "–"
            ),
            tex(_describe_source(config["models"][name].get("base")) if not config["models"][name].get("api") else "–"),
            tex(
                _describe_source(config["models"][name].get("chat"))
                if not config["models"][name].get("api")
                else f"API endpoint, model {config['models'][name]['api']['model']}"
            ),
        ]
        for name in used
    ]
    finetune = config.finetune
    methods = [m for m in METHODS if any(run.method == m for run in finetune)]
    method_rows = []
    for method in methods:
        settings = config.method_settings(next(run for run in finetune if run.method == method))
        lora = settings.get("lora")
        quant = (
            (f"4-bit {settings['quant_type']}" + (", double" if settings.get("double_quant") else ""))
            if tb_methods.get(method).quantized
            else "–"
        )
        method_rows.append(
            [
                tex(labels.method(method)),
                f"{settings['learning_rate']:g}",
                str(lora["r"]) if lora else "–",
                f"{lora['alpha']:g}" if lora else "–",
                tex(", ".join(lora["target_modules"])) if lora else tex("all weights"),
                tex(quant),
            ]
        )
    training = tb_config.entry_training(config, {})  # the shared settings, seed settled as in every run
    keys = [
        ("epochs", "Most epochs"),
        ("early_stop_patience", "Early-stop patience (epochs)"),
        ("batch_size", "Batch size per device"),
        ("gradient_accumulation", "Gradient accumulation"),
        ("max_length", "Longest example (tokens)"),
        ("batching", "Batching"),
        ("loss_on", "Tokens in the loss"),
        ("dtype", "Weights dtype"),
        ("warmup_steps_per_device", "Warm-up steps per device"),
        ("lr_schedule", "Schedule"),
    ]
    train_rows = [
        [tex(label), tex(str(training.get(key)).replace("_", " ") if training.get(key) is not None else "none")]
        for key, label in keys
        if key in training
    ]
    overrides = sorted(
        {
            f"{run.task} on {run.model}: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in run.training.items() if training.get(k) != v)
            for run in finetune
            if any(training.get(k) != v for k, v in run.training.items())
        }
    )

    out = [
        "\\begin{table}[tbp]\n\\centering\n\\caption{Models: the base model is fine-tuned, the chat model is "
        "prompted as the baseline.}\n\\label{tab:models}\n\\small\n\\fitbox{"
        + _tabular("llrll", ["Name", "Size", "Parameters (B)", "Fine-tuned from", "Prompted model"], model_rows)
        + "}\n\\end{table}\n"
    ]
    if method_rows:
        out.append(
            "\\begin{table}[tbp]\n\\centering\n\\caption{Fine-tuning methods as configured.}\n\\label{tab:methods}\n"
            "\\small\n\\fitbox{"
            + _tabular(
                "lrrrll",
                ["Method", "Learning rate", "LoRA rank", "LoRA alpha", "Trained weights", "Quantisation"],
                method_rows,
            )
            + "}\n\\end{table}\n"
        )
        note = (" Per-run overrides: " + tex("; ".join(overrides)) + ".") if overrides else ""
        out.append(
            "\\begin{table}[tbp]\n\\centering\n\\caption{Training settings shared by every run."
            + note
            + "}\n\\label{tab:training}\n\\small\n"
            + _tabular("lr", ["Setting", "Value"], train_rows)
            + "\n\\end{table}\n"
        )
    return "\n".join(out)


# -- assembly and build --------------------------------------------------------------------------


def claims_headline(claims: pd.DataFrame | None) -> str:
    """The abstract's count of the studies' claims by verdict, from results/claims.csv."""
    if claims is None or claims.empty:
        return ""
    found = tb_claims.counts(claims)
    decided = len(claims) - found["not run"]
    text = (
        f"Tested as paired differences on the same test rows, {decided} comparisons of the studies' claims were "
        f"{found['reproduced']} reproduced, {found['contradicted']} contradicted and {found['undecided']} "
        "undecided at this scale"
    )
    if found["not run"]:
        text += f"; {found['not run']} claims have no runs in this configuration"
    return text + "."


def seeds_tex(claims: pd.DataFrame, known: TaskSet) -> str:
    """A sentence per comparison whose fine-tuned run was trained with several seeds: the spread over seeds
    set against the bootstrap interval over test rows."""
    if "seeds" not in claims:
        return ""
    shown = claims[(claims["seeds"].fillna(1) > 1) & claims["seed_low"].notna()]
    sentences = [
        f"{tex(labels.task(row['task'], known))} {tex(row['better_run'])} against {tex(row['than_run'])} was "
        f"trained with {row['seeds']:.0f} seeds: its difference ranges from {row['seed_low'] * 100:.1f} to "
        f"{row['seed_high'] * 100:.1f} points over seeds, against a bootstrap interval of "
        f"[{row['ci_low'] * 100:.1f}, {row['ci_high'] * 100:.1f}] over test rows for the first seed."
        for _, row in shown.drop_duplicates(["task", "model", "better_run", "than_run"]).iterrows()
    ]
    if not sentences:
        return ""
    return (
        "\n" + " ".join(sentences) + " A bootstrap over test rows holds the trained weights fixed, so only the "
        "spread over seeds shows how much of a difference training variance alone can move.\n"
    )


def claims_tex(claims: pd.DataFrame | None, chosen: Plan) -> str:
    if claims is None or claims.empty or not chosen.drawing("table", "claims"):
        return "This configuration makes no pair of runs that a claim of the studies compares.\n"
    found = tb_claims.counts(claims)
    undecided = claims[claims["label"] == "undecided"]
    widest = (undecided["ci_high"] - undecided["ci_low"]).max() * 100 if not undecided.empty else None
    text = (
        "Each qualitative claim of the studies compares two kinds of run of the same model on the same test "
        "rows. We take the per-row verdicts of both runs, average their difference and bootstrap the rows in "
        "pairs; a claim is reproduced when the whole interval lies above zero and contradicted when it lies "
        f"below. Of {len(claims) - found['not run']} comparisons, {found['reproduced']} reproduce their claim, "
        f"{found['contradicted']} contradict it and {found['undecided']} cannot decide it"
    )
    if widest is not None:
        text += (
            f"; the widest undecided interval spans {widest:.1f} points, so those test sets are too small (or "
            "the effect too weak at this model size) to tell"
        )
    text += ". Table~\\ref{tab:claims} lists every comparison and Figure~\\ref{fig:claims} draws them.\n"
    text += seeds_tex(claims, chosen.known)
    output = chosen.drawing("table", "claims")
    return (
        text
        + _figure(chosen.drawing("figure", "claims"))
        + _table(output, tb_tables.build(output, metrics=None, claims=claims, known=chosen.known))
    )


def comparisons_tex(claims: pd.DataFrame | None, chosen: Plan) -> str:
    """The config's own comparisons, decided like the claims, after them."""
    output = chosen.drawing("table", "comparisons")
    if output is None or claims is None:
        return ""
    found = tb_claims.counts(tb_claims.comparisons(claims))
    return (
        f"\\paragraph{{Comparisons of this configuration.}} Decided the same way: {found['reproduced']} hold, "
        f"{found['contradicted']} are contradicted, {found['undecided']} cannot be decided and {found['not run']} "
        "have no runs (Table~\\ref{tab:comparisons}).\n"
        + _table(output, tb_tables.build(output, None, claims, known=chosen.known))
    )


def write_sources(
    config: tb_config.Experiment,
    config_files: Iterable[str],
    metrics: pd.DataFrame,
    curves: pd.DataFrame,
    tables_dir: Path,
    figures_dir: Path,
    build_dir: Path,
    claims: pd.DataFrame | None = None,
    data_dir: Path | None = None,
) -> Path:
    """Copy the hand-written sources and write the generated includes; returns the main .tex file.

    ``data_dir`` holds the data stage's manifests, which the data table reads (none: no data table)."""
    chosen = plan(config)
    studies = tb_claims.studies(claims) if claims is not None else None
    if chosen.drawing("table", "claims") and claims is None:
        raise UserError("this configuration decides claims of the studies; run `tunebench claims` before the paper.")
    build_dir = Path(build_dir)
    generated = build_dir / "generated"
    if generated.exists():
        shutil.rmtree(generated)
    (generated / "tables").mkdir(parents=True)
    (generated / "figures").mkdir(parents=True)
    for source in SOURCE_DIR.glob("*.tex"):
        shutil.copyfile(source, build_dir / source.name)
    for name in chosen.tables:
        path = Path(tables_dir) / f"{name}.tex"
        if not path.is_file():
            raise UserError(f"{path} is missing; run `tunebench tables` (or the workflow's table rules) first.")
        shutil.copyfile(path, generated / "tables" / path.name)
    for name in chosen.figures:
        path = Path(figures_dir) / f"{name}.pdf"
        if not path.is_file():
            raise UserError(f"{path} is missing; run `tunebench figures` (or the workflow's figure rules) first.")
        shutil.copyfile(path, generated / "figures" / path.name)
    files = {
        "numbers.tex": numbers_tex(numbers(config, config_files, metrics)),
        "headline.tex": " ".join(filter(None, [headline(metrics, chosen.known), claims_headline(studies)])) + "\n",
        "claims.tex": claims_tex(studies, chosen) + comparisons_tex(claims, chosen),
        "setup.tex": setup_tex(config, metrics),
        "data.tex": data_tex(read_manifests(data_dir, dict.fromkeys(metrics["task"])), chosen.known)
        if data_dir
        else "",
        "results.tex": results_tex(metrics, chosen),
        "published.tex": (
            published_tex(metrics, chosen)
            if chosen.drawing("table", "published")
            else "This configuration runs none of the studies' tasks, so no published figure applies.\n"
        ),
        "cost.tex": cost_tex(metrics, chosen) if chosen.drawing("table", "cost") else "No model was fine-tuned.\n",
        "extras.tex": extras_tex(metrics, curves, chosen),
    }
    for name, text in files.items():
        fileio.write_atomic(generated / name, text)
    return build_dir / MAIN


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if line.startswith("!") or re.match(r"^\S+\.tex:\d+: ", line):
            return line.strip()
    return "see the log for the first error"


def tex_missing() -> list[str]:
    """The TeX programs the PDF needs that are not on PATH (empty when the paper can be built)."""
    return [tool for tool in ("latexmk", "pdflatex") if shutil.which(tool) is None]


def how_to_get_tex(missing: list[str]) -> str:
    return f"{' and '.join(missing)} not found; install LaTeX with `apt-get install {TEX_PACKAGES}` (Debian/Ubuntu)"


def compile_pdf(main: Path, out: Path) -> Path:
    missing = tex_missing()
    if missing:
        raise LatexError(f"{how_to_get_tex(missing)} and run the paper step again.")
    main = Path(main)
    # A fixed source date makes the PDF depend on the results only, not on when it was built;
    # long log lines keep an error message on one line for the report below.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1", "max_print_line": "10000"}
    result = subprocess.run(
        ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", main.name],
        cwd=main.parent,
        capture_output=True,
        text=True,
        env=env,
    )
    log_path = main.with_suffix(".log")
    if result.returncode != 0:
        log = log_path.read_text(errors="replace") if log_path.is_file() else result.stdout
        raise LatexError(f"LaTeX could not build {main} ({_first_error(log)}); the full log is {log_path}.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(main.with_suffix(".pdf"), out)
    return out
