"""Figures of ``results/metrics.csv`` and ``results/learning_curves.csv`` (seaborn; PNG and PDF).

Each figure is drawn by one function, named by the ``draws`` of its entry in :func:`tunebench.results.plan`:

``task``             per metric, bars by model size and one bar per method: the prompted baseline
                     in a dark shade with the fine-tuning gain stacked above it in a light one,
                     intervals on both, and a line at any published GPT-4 figure
``learning_curves``  validation perplexity per epoch, the selected checkpoint starred
``two_stage``        prompted, fine-tuned on the task, and fine-tuned on a first task before it
``gain_vs_cost``     gain over the prompted baseline against training device-hours
``ablation_format``  the same model and method trained in two prompt formats
``claims``           each claim of the studies: the paired difference and its interval, by verdict
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a compute node

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.legend_handler import HandlerTuple  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from ..stages.train import methods as tb_methods  # noqa: E402
from ..tasks import TaskSet  # noqa: E402
from ..util import fileio  # noqa: E402
from ..util.errors import UserError  # noqa: E402
from . import METHODS, Output, labels  # noqa: E402
from . import published as tb_published  # noqa: E402
from .text import cost_unit  # noqa: E402

WIDTH = 7.0  # inches: the text width of the paper, so figures are not rescaled there
PROMPTED_COLOR = "#3a3a3a"
REFERENCE_COLOR = "#7b3294"  # purple, as the study drew GPT-4
PERCENT = "% of test examples"
STAR_SIZE = 170  # marker area of a selected checkpoint in the learning curves


def _theme() -> None:
    sns.set_theme(
        context="paper",
        style="whitegrid",
        font_scale=1.05,
        rc={"axes.titleweight": "bold", "legend.frameon": False, "savefig.bbox": "tight"},
    )


def method_colors() -> dict[str, tuple]:
    return {name: to_rgb(method.colour) for name, method in tb_methods.REGISTRY.items()}


def shade(color, factor: float) -> tuple:
    """Darker (factor < 1, towards black) or lighter (factor > 1, towards white) version of a colour."""
    rgb = np.array(to_rgb(color))
    return tuple(rgb * factor if factor <= 1 else rgb + (1 - rgb) * (factor - 1))


_NO_DATES = {"CreationDate": None, "Creator": None, "Producer": None}


def save(fig, out_base: Path) -> list[Path]:
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(".png"), out_base.with_suffix(".pdf")]
    # No creation date: the same results give byte-identical PDFs.
    for path, options in zip(paths, ({"dpi": 200, "metadata": {"Software": None}}, {"metadata": _NO_DATES})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=path.suffix[1:], **options)
        fileio.write_atomic(path, buffer.getvalue())
    plt.close(fig)
    return paths


def _panels(count: int, height: float):
    cols = count if count <= 3 else 2
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _models(frame: pd.DataFrame) -> pd.DataFrame:
    """Models of ``frame`` by size, with the tick label (the size, plus the name if two share a size)."""
    models = frame.drop_duplicates("model")[["model", "size", "params_b"]].sort_values(
        ["params_b", "model"], kind="stable"
    )
    clash = models["size"].duplicated(keep=False)
    models["tick"] = np.where(clash, models["size"] + "\n" + models["model"], models["size"])
    return models.reset_index(drop=True)


def _one(frame: pd.DataFrame) -> pd.Series | None:
    return frame.iloc[0] if not frame.empty else None


def _main_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Single-stage fine-tuned runs, one per model and method: the special-token format where present."""
    tuned = frame[frame["stage"] == "finetuned"].copy()
    tuned["rank"] = (tuned["format"] != "special_tokens").astype(int)
    return tuned.sort_values("rank", kind="stable").drop_duplicates(["model", "method", "metric"]).drop(columns="rank")


def _errorbar(ax, x, row, color, width) -> None:
    if row is None or pd.isna(row["value"]) or pd.isna(row["ci_low"]):
        return
    value = row["value"] * 100
    ax.errorbar(
        x,
        value,
        yerr=[[value - row["ci_low"] * 100], [row["ci_high"] * 100 - value]],
        fmt="none",
        ecolor=color,
        elinewidth=1.0,
        capsize=max(1.5, 10 * width),
        zorder=4,
    )


def task_accuracy(metrics: pd.DataFrame, published: pd.DataFrame, task: str, known: TaskSet) -> plt.Figure:
    frame = metrics[metrics["task"] == task]
    if frame.empty:
        raise UserError(
            f"results/metrics.csv has no rows for task {task}; run its evaluations and `tunebench aggregate` first."
        )
    names = list(dict.fromkeys(frame["metric"]))
    models = _models(frame)
    tuned = _main_runs(frame)
    methods = [m for m in METHODS if m in set(tuned["method"])]
    colors = method_colors()
    slots = max(1, len(methods))
    width = min(0.8 / slots, 0.5)  # a lone bar stays bar-shaped
    annotate = len(models) * slots <= 6
    fig, axes = _panels(len(names), 2.9 if len(names) > 1 else 3.4)
    seen = set()
    for ax, metric in zip(axes, names):
        rows = frame[frame["metric"] == metric]
        for i, model in models.iterrows():
            own = rows[rows["model"] == model["model"]]
            base = _one(own[(own["stage"] == "baseline") & (own["variant"] == "default")])
            base_value = base["value"] * 100 if base is not None and pd.notna(base["value"]) else None
            own_tuned = tuned[(tuned["model"] == model["model"]) & (tuned["metric"] == metric)]
            if own_tuned.empty and base_value is not None:
                ax.bar(i, base_value, width, color=PROMPTED_COLOR, zorder=2)
                _errorbar(ax, i, base, "black", width)
                seen.add("prompted_only")
            for j, method in enumerate(methods):
                run = _one(own_tuned[own_tuned["method"] == method])
                if run is None or pd.isna(run["value"]):
                    continue
                x = i + (j - (slots - 1) / 2) * width
                value = run["value"] * 100
                dark, light = shade(colors[method], 0.55), shade(colors[method], 1.25)
                if base_value is None:
                    ax.bar(x, value, width, color=light, edgecolor="white", linewidth=0.5, zorder=2)
                elif value >= base_value:
                    ax.bar(x, base_value, width, color=dark, edgecolor="white", linewidth=0.5, zorder=2)
                    ax.bar(
                        x,
                        value - base_value,
                        width,
                        bottom=base_value,
                        color=light,
                        edgecolor="white",
                        linewidth=0.5,
                        zorder=2,
                    )
                else:
                    ax.bar(x, value, width, color=dark, edgecolor="white", linewidth=0.5, zorder=2)
                    ax.bar(
                        x,
                        base_value - value,
                        width,
                        bottom=value,
                        facecolor="white",
                        edgecolor=dark,
                        hatch="////",
                        linewidth=0.8,
                        zorder=2,
                    )
                    seen.add("loss")
                _errorbar(ax, x - width / 4, base, "#777777", width / 2)
                _errorbar(ax, x + (width / 4 if base_value is not None else 0), run, "black", width / 2)
                if annotate and base_value is not None:
                    whiskers = [run["ci_high"], base["ci_high"]]
                    top = max([value, base_value] + [w * 100 for w in whiskers if pd.notna(w)])
                    gain = f"{value - base_value:+.0f}".replace("-", "\u2212")
                    ax.text(
                        x,
                        top + 1.5,
                        gain,
                        ha="center",
                        va="bottom",
                        fontsize=8,
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.85},
                        zorder=6,
                    )
            variants = own[(own["stage"] == "baseline") & (own["variant"] != "default")]
            for _, variant in variants.iterrows():
                if pd.notna(variant["value"]):
                    ax.hlines(
                        variant["value"] * 100,
                        i - 0.42,
                        i + 0.42,
                        colors="black",
                        linestyles=(0, (1, 1)),
                        linewidth=1.4,
                        zorder=5,
                    )
                    seen.add(f"variant:{variant['variant']}")
        for _, ref in tb_published.reference_lines(published, task, metric).iterrows():
            ax.axhline(ref["value"], color=REFERENCE_COLOR, linestyle="--", linewidth=1.2, zorder=1)
            seen.add(f"reference:{ref['model']}")
        ax.set_title(labels.metric(metric))
        ax.set_xticks(range(len(models)), models["tick"])
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_ylim(0, 114 if annotate else 108)  # room above 100 % for the gain labels
        ax.set_yticks(range(0, 101, 20))
        ax.set_xlabel("Model size (parameters)")
        ax.set_ylabel(f"Correct ({PERCENT})")
    handles, texts = [], []
    if methods:
        handles.append(tuple(Patch(color=shade(colors[m], 0.55)) for m in methods))
        texts.append("Prompted baseline (dark shade)")
        for method in methods:
            handles.append(Patch(color=shade(colors[method], 1.25)))
            texts.append(f"{labels.method(method)} fine-tuning: gain")
    if "prompted_only" in seen:
        handles.append(Patch(color=PROMPTED_COLOR))
        texts.append("Prompted only (no fine-tuned run)")
    if "loss" in seen:
        handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="////"))
        texts.append("Fine-tuned below prompted")
    for key in sorted(seen):
        kind, _, name = key.partition(":")
        if kind == "variant":
            handles.append(plt.Line2D([], [], color="black", linestyle=(0, (1, 1)), linewidth=1.4))
            texts.append(f"Prompted, {name.replace('_', ' ')} variant")
        elif kind == "reference":
            handles.append(plt.Line2D([], [], color=REFERENCE_COLOR, linestyle="--", linewidth=1.2))
            texts.append(f"{name}, published")
    handles.append(plt.Line2D([], [], color="black", marker="|", linestyle="none", markersize=8))
    texts.append("Bootstrap confidence interval")
    fig.suptitle(f"{labels.task(task, known)}: prompted baseline and fine-tuning gain", fontweight="bold")
    fig.legend(
        handles,
        texts,
        loc="outside lower center",
        ncol=min(3, len(texts)),
        handler_map={tuple: HandlerTuple(ndivide=None, pad=0)},
        fontsize=8.5,
    )
    return fig


def _curve_label(row: pd.Series, known: TaskSet) -> str:
    text = labels.method(row["method"])
    if row["format"] != "special_tokens":
        text += f", {labels.fmt(row['format'])}"
    if row["stage"] == "two_stage":
        text += f", after {labels.task(row['init_from'].split('/')[0], known)}"
    return text


def learning_curves(curves: pd.DataFrame, known: TaskSet) -> plt.Figure:
    if curves.empty:
        raise UserError("results/learning_curves.csv has no epochs; train a model and run `tunebench aggregate` first.")
    order = [t for t in (*known.scored(), *sorted(curves["task"].unique())) if t in set(curves["task"])]
    order = list(dict.fromkeys(order))
    curves = curves.copy()
    curves["Run"] = curves.apply(_curve_label, axis=1, known=known)
    # Runs that differ only in what a label does not say (their training seed) are named by their run too.
    shared = curves.groupby("Run")["run"].transform("nunique") > 1
    curves.loc[shared, "Run"] = curves.loc[shared, "Run"] + " (" + curves.loc[shared, "run"] + ")"
    curves["Model size"] = curves["size"]
    runs = list(
        dict.fromkeys(
            curves.sort_values(["method"], key=lambda s: s.map({m: i for i, m in enumerate(METHODS)}), kind="stable")[
                "Run"
            ]
        )
    )
    sizes = list(dict.fromkeys(curves.sort_values("params_b", kind="stable")["Model size"]))
    palette = dict(zip(runs, sns.color_palette("deep", len(runs))))
    last_epoch = int(curves["epoch"].max())
    fig, axes = _panels(len(order), 2.6)
    for index, (ax, task) in enumerate(zip(axes, order)):
        part = curves[curves["task"] == task]
        # Line style tells model sizes apart, so it is only used when there is more than one.
        by_size = (
            {"style": "Model size", "style_order": sizes, "markers": True, "dashes": True}
            if len(sizes) > 1
            else {"marker": "o"}
        )
        sns.lineplot(
            data=part,
            x="epoch",
            y="validation_perplexity",
            hue="Run",
            hue_order=runs,
            palette=palette,
            ax=ax,
            legend=index == 0,
            units="model",
            estimator=None,
            **by_size,
        )
        chosen = part[part["selected"]]
        # The star takes its run's colour: a one-epoch run is a lone star, still told apart by colour.
        ax.scatter(
            chosen["epoch"],
            chosen["validation_perplexity"],
            marker="*",
            s=STAR_SIZE,
            color=[palette[run] for run in chosen["Run"]],
            edgecolor="black",
            linewidth=0.8,
            zorder=5,
        )
        # Every panel shows the same whole epochs, also when all its runs stopped after the first.
        ax.set_xticks(range(1, last_epoch + 1))
        ax.set_xlim(0.6, last_epoch + 0.4)
        ax.set_title(labels.task(task, known))
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Validation perplexity")
    handles, texts = axes[0].get_legend_handles_labels()
    axes[0].get_legend().remove()
    handles.append(
        Line2D(
            [],
            [],
            linestyle="none",
            marker="*",
            markersize=12,
            markerfacecolor="white",
            markeredgecolor="black",
            markeredgewidth=0.8,
        )
    )
    texts.append("Selected checkpoint (in its run's colour)")
    # seaborn puts section titles (Run, Model size) among the entries; keep them as plain text.
    fig.legend(handles, texts, loc="outside lower center", ncol=min(4, len(texts)), fontsize=8.5)
    fig.suptitle(
        "Validation perplexity per epoch (lower is better); the star marks the checkpoint evaluated",
        fontweight="bold",
        fontsize=10,
    )
    return fig


def two_stage(metrics: pd.DataFrame, task: str, known: TaskSet) -> plt.Figure:
    primary = metrics[(metrics["task"] == task) & metrics["primary"]]
    staged = primary[primary["stage"] == "two_stage"]
    if staged.empty:
        raise UserError(
            f"results/metrics.csv has no two-stage run on {task}; add a finetune entry with init_from to the config."
        )
    metric = staged["metric"].iloc[0]
    first = labels.task(staged["init_from"].iloc[0].split("/")[0], known)
    colors = method_colors()
    groups = []
    for _, run in staged.sort_values("params_b", kind="stable").iterrows():
        same = primary[primary["model"] == run["model"]]
        base = _one(same[(same["stage"] == "baseline") & (same["variant"] == "default")])
        single = _one(
            same[(same["stage"] == "finetuned") & (same["method"] == run["method"]) & (same["format"] == run["format"])]
        )
        groups.append(
            (
                f"{run['size']}, {labels.method(run['method'])}",
                [
                    ("Prompted", base, PROMPTED_COLOR),
                    (
                        f"Fine-tuned on {labels.task(task, known)}",
                        single,
                        shade(colors.get(run["method"], "grey"), 1.35),
                    ),
                    (f"{first}, then {labels.task(task, known)}", run, shade(colors.get(run["method"], "grey"), 0.8)),
                ],
            )
        )
    fig, ax = plt.subplots(figsize=(min(WIDTH, 2.4 + 1.6 * len(groups)), 3.4), layout="constrained")
    width = 0.26
    for i, (_, bars) in enumerate(groups):
        for j, (name, row, color) in enumerate(bars):
            if row is None or pd.isna(row["value"]):
                continue
            x = i + (j - 1) * width
            value = row["value"] * 100
            ax.bar(x, value, width * 0.95, color=color, label=name if i == 0 else None, zorder=2)
            _errorbar(ax, x, row, "black", width)
            top = row["ci_high"] * 100 if pd.notna(row["ci_high"]) else value
            ax.text(x, top + 1.5, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(groups)), [g[0] for g in groups])
    ax.set_ylim(0, 114)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("Model size, method")
    ax.set_ylabel(f"{labels.metric(metric)} ({PERCENT})")
    ax.set_title(f"{labels.task(task, known)}: one stage or two", fontweight="bold")
    fig.legend(loc="outside lower center", ncol=3, fontsize=8.5)
    return fig


def gain_vs_cost(metrics: pd.DataFrame, known: TaskSet) -> plt.Figure:
    primary = metrics[metrics["primary"]]
    base = primary[(primary["stage"] == "baseline") & (primary["variant"] == "default")][["task", "model", "value"]]
    tuned = primary[primary["stage"] != "baseline"].merge(base, on=["task", "model"], suffixes=("", "_base"))
    tuned = tuned[tuned["device_hours_total"] > 0].copy()
    if tuned.empty:
        raise UserError(
            "results/metrics.csv has no fine-tuned run with a prompted baseline of the same model; "
            "add baselines for the fine-tuned models to the config."
        )
    tuned["gain"] = (tuned["value"] - tuned["value_base"]) * 100
    tuned["Task"] = tuned["task"].map(lambda name: labels.task(name, known))
    tuned["Method"] = tuned["method"].map(labels.method)
    tuned["Model size"] = tuned["size"]
    sizes = list(dict.fromkeys(tuned.sort_values("params_b", kind="stable")["Model size"]))
    unit = cost_unit(tuned["device_kind"])
    fig, ax = plt.subplots(figsize=(WIDTH, 3.6), layout="constrained")
    ax.axhline(0, color="grey", linewidth=0.8, zorder=1)
    # Marker size shows the model size only when there is more than one.
    by_size = (
        {"size": "Model size", "sizes": dict(zip(sizes, np.linspace(40, 180, len(sizes))))}
        if len(sizes) > 1
        else {"s": 70}
    )
    sns.scatterplot(
        data=tuned,
        x="device_hours_total",
        y="gain",
        hue="Task",
        style="Method",
        style_order=[labels.method(m) for m in METHODS if labels.method(m) in set(tuned["Method"])],
        edgecolor="black",
        linewidth=0.5,
        ax=ax,
        zorder=3,
        **by_size,
    )
    scale = ""
    # Costs spanning more than a factor of ten (model sizes, GPUs against CPUs) need a log axis.
    if tuned["device_hours_total"].max() > 10 * tuned["device_hours_total"].min():
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        scale = ", log scale"
    ax.set_xlabel(f"Training cost ({unit}{scale}; two-stage runs include the first stage)")
    ax.set_ylabel("Gain over prompted (points,\nprimary metric)")
    ax.set_title("Accuracy gained against training cost", fontweight="bold")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5)
    return fig


def ablation(metrics: pd.DataFrame, task: str, known: TaskSet) -> plt.Figure:
    frame = metrics[(metrics["task"] == task) & (metrics["stage"] == "finetuned")]
    pairs = [key for key, part in frame.groupby(["model", "method"], sort=False) if part["format"].nunique() > 1]
    if not pairs:
        raise UserError(
            f"results/metrics.csv has no {task} runs of one model and method in two prompt formats; "
            "add a finetune entry with another format to the config."
        )
    names = list(dict.fromkeys(frame["metric"]))
    formats = list(dict.fromkeys(sorted(frame["format"], key=lambda f: f != "special_tokens")))
    palette = dict(zip(formats, sns.color_palette("colorblind", len(formats))))
    fig, axes = _panels(len(pairs), 3.3)
    width = 0.8 / len(formats)
    for ax, (model, method) in zip(axes, pairs):
        part = frame[(frame["model"] == model) & (frame["method"] == method)]
        for j, fmt in enumerate(formats):
            for i, metric in enumerate(names):
                row = _one(part[(part["format"] == fmt) & (part["metric"] == metric)])
                if row is None or pd.isna(row["value"]):
                    continue
                x = i + (j - (len(formats) - 1) / 2) * width
                ax.bar(
                    x,
                    row["value"] * 100,
                    width * 0.95,
                    color=palette[fmt],
                    zorder=2,
                    label=f"{labels.fmt(fmt).capitalize()} format" if i == 0 else None,
                )
                _errorbar(ax, x, row, "black", width)
        size = part["size"].iloc[0]
        ax.set_title(f"{labels.task(task, known)}, {size} ({model}), {labels.method(method)}")
        ax.set_xticks(range(len(names)), [labels.metric(m).replace(" ", "\n", 1) for m in names])
        ax.set_ylim(0, 105)
        ax.set_xlabel("Metric")
        ax.set_ylabel(f"Correct ({PERCENT})")
    handles, texts = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="black", marker="|", linestyle="none", markersize=8))
    texts.append("Bootstrap confidence interval")
    fig.legend(handles, texts, loc="outside lower center", ncol=3, fontsize=8.5)
    fig.suptitle("Prompt format: special tokens against a natural-language instruction", fontweight="bold")
    return fig


VERDICT_COLORS = {"reproduced": "#1b7837", "contradicted": "#b2182b", "undecided": "#8c8c8c"}


def claims(frame: pd.DataFrame, known: TaskSet) -> plt.Figure:
    """Each decided claim's paired difference with its interval, coloured by verdict; zero marked."""
    ran = frame[frame["label"] != "not run"].dropna(subset=["difference"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(WIDTH, 0.9 + 0.32 * max(1, len(ran))))
    for i, row in ran.iterrows():
        color = VERDICT_COLORS[row["label"]]
        center, low, high = row["difference"] * 100, row["ci_low"] * 100, row["ci_high"] * 100
        ax.errorbar(center, i, xerr=[[center - low], [high - center]], fmt="o", color=color, capsize=3, markersize=5)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(ran)))
    ax.set_yticklabels(
        [
            f"{labels.task(r['task'], known)} {r['size']}: {r['better_run']} vs {r['than_run']}"
            for _, r in ran.iterrows()
        ]
    )
    ax.invert_yaxis()
    ax.set_xlabel("Paired difference on the same test rows (points)")
    handles = [
        Line2D([], [], marker="o", linestyle="", color=color, label=name) for name, color in VERDICT_COLORS.items()
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="Verdict")
    not_run = int((frame["label"] == "not run").sum())
    ax.set_title("The studies' claims on these runs" + (f" ({not_run} not run)" if not_run else ""))
    return fig


#: What draws each kind of figure (see :class:`tunebench.results.Output`); per-task ones take the task.
BUILDERS = {
    "task": lambda metrics, task, known: task_accuracy(metrics, tb_published.load(), task, known),
    "two_stage": two_stage,
    "gain_vs_cost": gain_vs_cost,
    "ablation_format": ablation,
}


def build(
    output: Output,
    metrics: pd.DataFrame,
    curves: pd.DataFrame,
    claims_frame: pd.DataFrame | None = None,
    *,
    known: TaskSet,
) -> plt.Figure:
    """The figure ``output`` names; ``known`` (the experiment's tasks) labels and orders them."""
    _theme()
    if output.draws == "claims":
        if claims_frame is None:
            raise UserError("the claims figure needs results/claims.csv; run `tunebench claims` first.")
        return claims(claims_frame, known)
    if output.draws == "learning_curves":
        return learning_curves(curves, known)
    if output.task:
        return BUILDERS[output.draws](metrics, output.task, known)
    return BUILDERS[output.draws](metrics, known)


def write_all(
    outputs: Iterable[Output],
    metrics: pd.DataFrame,
    curves: pd.DataFrame,
    out_dir: Path,
    claims_frame: pd.DataFrame | None = None,
    *,
    known: TaskSet,
) -> list[Path]:
    return [
        path
        for output in outputs
        for path in save(build(output, metrics, curves, claims_frame, known=known), Path(out_dir) / output.name)
    ]
