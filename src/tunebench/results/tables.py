"""Tables of ``results/metrics.csv``, each one numeric DataFrame written as CSV, Markdown and LaTeX.

A builder returns a :class:`Table`: a frame with one row per table row, every number as measured
(shares in percent, unrounded), and the columns a reader sees, each saying how a row of the frame
reads in it. The CSV holds the frame's numbers a reader would copy (percentages rounded to one
decimal, intervals in their own columns); pandas writes the same rows as display text to Markdown
(``to_markdown``) and to a booktabs LaTeX ``tabular`` (``Styler.to_latex``, the best value of a
column in bold). The LaTeX file is a bare ``tabular`` so a document chooses the float, caption and
size around it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..tasks import TaskSet
from ..util import fileio
from ..util.errors import UserError
from . import Output, labels
from . import claims as tb_claims
from . import published as tb_published
from .text import cost_unit, count, hours, interval, latex_escape, number, plain, signed


@dataclass(frozen=True)
class Column:
    """One column a reader sees: its header and the text of a row of the table's frame in it."""

    header: str
    cell: Callable[[pd.Series], str]
    numeric: bool = False  # right-aligned
    best: str | None = None  # the frame column whose largest value is bold (ties too), given two rows or more


@dataclass
class Table:
    caption: str
    frame: pd.DataFrame
    columns: list[Column]
    csv: list[str]  # the frame columns the CSV holds, in order
    rounded: tuple[str, ...] = ()  # of those, the percentages the CSV rounds to one decimal
    note: str = ""
    name: str = ""  # the file name, from the table's entry in the plan (see build)

    def csv_frame(self) -> pd.DataFrame:
        out = self.frame[self.csv].copy()
        for column in self.rounded:
            # Python's round is exact on the binary value, as the display text's formatting is; numpy's is not.
            out[column] = out[column].map(lambda value: round(float(value), 1))
        return out

    def text(self) -> pd.DataFrame:
        """The display text, one column per :class:`Column`, headed by its header."""
        cells = [[column.cell(row) for column in self.columns] for _, row in self.frame.iterrows()]
        return pd.DataFrame(cells, columns=[column.header for column in self.columns], dtype=object)

    def bold(self) -> pd.DataFrame:
        """Which cells hold the best value of their column."""
        mask = pd.DataFrame(False, index=range(len(self.frame)), columns=[column.header for column in self.columns])
        if len(self.frame) < 2:
            return mask
        for column in self.columns:
            if column.best:
                values = self.frame[column.best].astype(float).reset_index(drop=True)
                if values.notna().any():
                    mask[column.header] = values == values.max()
        return mask


# -- the tables ----------------------------------------------------------------------------------

#: The columns of a run that lead the headline and cost tables' CSVs.
HEADLINE_FIELDS = ("task", "model", "size", "run", "stage")


def _runs(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run (the metric-independent columns), in the order of metrics.csv."""
    return metrics.drop_duplicates(["task", "model", "run"])


def _metric_order(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["metric"]))


def _percent_interval(name: str) -> Callable[[pd.Series], str]:
    return lambda row: interval(row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"])


def _baseline_value(runs: pd.DataFrame, run: pd.Series, **match: str) -> float:
    """The value of the prompted baseline of the run's task and model (NaN when there is none)."""
    base = runs[(runs["task"] == run["task"]) & (runs["model"] == run["model"]) & (runs["stage"] == "baseline")]
    for key, value in match.items():
        base = base[base[key] == value]
    return base["value"].iloc[0] if not base.empty else math.nan


def _label_fields(run: pd.Series) -> dict:
    """What :func:`labels.run` reads of a run besides its stage: method, format, variant, first stage and,
    for a run repeated with another training seed, that seed."""
    fields = ("method", "format", "variant", "init_from", *(f for f in SEED_FIELDS if f in run.index))
    return {field: run[field] for field in fields}


#: metrics.csv's columns of seed replicates (present only when a config has some).
SEED_FIELDS = ("replicate_of", "seed")


def task_table(metrics: pd.DataFrame, task: str, known: TaskSet) -> Table:
    """Every metric of every run of one task, with its interval."""
    frame = metrics[metrics["task"] == task]
    if frame.empty:
        raise UserError(
            f"results/metrics.csv has no rows for task {task}; run its evaluations and `tunebench aggregate` first."
        )
    names = _metric_order(frame)
    records = []
    for _, run in _runs(frame).iterrows():
        cells = frame[(frame["model"] == run["model"]) & (frame["run"] == run["run"])].set_index("metric")
        identity = ("model", "size", "method", "stage", "format", "variant", "run", "n_examples", "unscorable")
        record = {column: run[column] for column in identity}
        for name in names:
            if name in cells.index:
                m = cells.loc[name]
                record |= {
                    name: m["value"] * 100,
                    f"{name}_ci_low": m["ci_low"] * 100,
                    f"{name}_ci_high": m["ci_high"] * 100,
                }
        records.append(record | {"task": run["task"]} | _label_fields(run))
    table = pd.DataFrame(records)
    # A run without some metric has no cells for it; its columns come where the first run with it put them.
    csv = [column for column in table.columns if column not in ("task", "init_from", *SEED_FIELDS)]
    percents = [f"{name}{suffix}" for name in names for suffix in ("", "_ci_low", "_ci_high")]
    columns = [
        Column("Model", labels.model),
        Column("Run", lambda row: labels.run(row, known)),
        Column("n", lambda row: f"{row['n_examples']:.0f}", numeric=True),
    ]
    if (table["unscorable"].fillna(0) > 0).any():
        columns.append(Column("Unscorable", lambda row: f"{row['unscorable']:.0f}", numeric=True))
    columns += [
        Column(labels.metric(name) + " (%)", _percent_interval(name), numeric=True, best=name) for name in names
    ]
    return Table(
        caption=(
            f"{labels.task(task, known)}: share of test examples scored correct, in percent, with "
            f"bootstrap confidence intervals in brackets; the best value per column is in bold."
        ),
        frame=table,
        columns=columns,
        csv=csv,
        rounded=tuple(percents),
    )


def main_table(metrics: pd.DataFrame, known: TaskSet) -> Table:
    """The headline: every run's primary metric, its gain over the prompted model and its prompt length."""
    primary = metrics[metrics["primary"]]
    records = []
    for _, run in primary.iterrows():
        gain = math.nan
        if run["stage"] != "baseline":
            gain = (run["value"] - _baseline_value(primary, run, variant="default")) * 100
        records.append(
            {key: run[key] for key in HEADLINE_FIELDS}
            | {
                "metric": run["metric"],
                "value_pct": run["value"] * 100,
                "ci_low_pct": run["ci_low"] * 100,
                "ci_high_pct": run["ci_high"] * 100,
                "gain_points": gain,
                "n": run["n"],
                "prompt_tokens_mean": run["prompt_tokens_mean"],
            }
            | _label_fields(run)
        )
    frame = pd.DataFrame(records)
    return Table(
        caption=(
            "Every run on its task's primary metric (percent of test examples, bootstrap interval in brackets) "
            "and its gain over the prompted baseline of the same model."
        ),
        frame=frame,
        columns=[
            Column("Task", lambda row: labels.task(row["task"], known)),
            Column("Model", labels.model),
            Column("Run", lambda row: labels.run(row, known)),
            Column("Metric", lambda row: labels.metric(row["metric"])),
            Column(
                "Value (%)", lambda row: interval(row["value_pct"], row["ci_low_pct"], row["ci_high_pct"]), numeric=True
            ),
            Column("Gain (points)", lambda row: signed(row["gain_points"]), numeric=True),
            Column("Prompt tokens / query", lambda row: plain(row["prompt_tokens_mean"]), numeric=True),
        ],
        csv=[
            *HEADLINE_FIELDS,
            "metric",
            "value_pct",
            "ci_low_pct",
            "ci_high_pct",
            "gain_points",
            "n",
            "prompt_tokens_mean",
        ],
        rounded=("value_pct", "ci_low_pct", "ci_high_pct", "gain_points"),
    )


def _figure_label(row: pd.Series) -> str:
    if row["quantity"] == "accuracy":
        return labels.metric(row["metric"]) + " (%)"
    names = {
        "gain": "Gain over prompted (points)",
        "gain_over_finetuned": "Gain over single-stage (points)",
        "epoch_tokens": "Tokens per epoch (millions)",
        "epoch_minutes": "Minutes per epoch",
        "train_hours": "Training time (hours)",
        "devices": "Training processes",
    }
    return names[row["quantity"]]


#: Decimals of a published quantity that is not a percentage.
PUBLISHED_DIGITS = {"train_hours": 2, "epoch_tokens": 2, "devices": 0}


def published_table(metrics: pd.DataFrame, known: TaskSet) -> Table:
    compared = tb_published.compare(tb_published.load(), metrics)

    def relation(row):
        return ("" if row["relation"] == "=" else f"{row['relation']} ") + f"{row['published']:g}"

    def places(row):
        return PUBLISHED_DIGITS.get(row["quantity"], 1)

    return Table(
        caption=(
            "Figures stated by the case studies beside the same quantity measured on our runs; the "
            "difference is ours minus published, and the last column names what differs from the study's "
            "setting: the model size, the fine-tuning method, or CPU processes in place of GPUs."
        ),
        frame=compared,
        columns=[
            Column("Study", lambda row: row["study"]),
            Column("Task", lambda row: labels.task(row["task"], known) if row["task"] else "all"),
            Column("Figure", _figure_label),
            Column("Published model", lambda row: row["published_model"]),
            Column("Published", relation, numeric=True),
            Column("Our run", lambda row: row["our_label"] or "–"),
            Column("Ours", lambda row: plain(row["reproduced"], places(row)), numeric=True),
            Column("Difference", lambda row: signed(row["difference"], places(row)), numeric=True),
            Column("Differs in", lambda row: "–" if row["match"] == "same setting" else row["match"]),
        ],
        csv=list(compared.columns),
        note="Study A: full fine-tuning of Llama-2 on ViGGO, SQL and GSM8K; study B: QLoRA on long multiplication.",
    )


def cost_table(metrics: pd.DataFrame, known: TaskSet) -> Table:
    primary = metrics[metrics["primary"]]
    runs = primary[(primary["stage"] != "baseline") | (primary["variant"] == "default")]
    unit = cost_unit(runs.loc[runs["stage"] != "baseline", "device_kind"])
    primaries = "; ".join(
        f"{labels.task(t, known)}: {labels.metric(m).lower()}"
        for t, m in runs[["task", "metric"]].drop_duplicates().itertuples(index=False)
    )
    # API baselines add their price and their failed requests; a config without one keeps the columns above.
    api = "api_cost_per_1k_queries_usd" in runs.columns
    records = []
    for _, run in runs.iterrows():
        trained = run["stage"] != "baseline"
        records.append(
            {key: run[key] for key in HEADLINE_FIELDS}
            | {
                "device_kind": run["device_kind"] if trained else "",
                "num_processes": run["num_processes"] if trained else math.nan,
                "device_hours": run["device_hours_total"],
                "train_tokens": run["train_tokens_total"],
                "train_wall_time_s": run["train_wall_time_s_total"],
                "peak_memory_mb": run["peak_memory_mb"],
                "prompt_tokens_mean": run["prompt_tokens_mean"],
                "generated_tokens_mean": run["generated_tokens_mean"],
                "eval_wall_time_s": run["eval_wall_time_s"],
                "metric": run["metric"],
                "value_pct": run["value"] * 100,
                "gain_points": (run["value"] - _baseline_value(runs, run)) * 100 if trained else math.nan,
            }
            | _label_fields(run)
            | (
                {
                    "cost_per_1k_queries_usd": run["api_cost_per_1k_queries_usd"],
                    "api_failed_rows": run["api_failed_rows"],
                    "n_examples": run["n_examples"],
                }
                if api
                else {}
            )
        )
    frame = pd.DataFrame(records)

    def when_trained(show: Callable[[pd.Series], str]) -> Callable[[pd.Series], str]:
        return lambda row: show(row) if row["stage"] != "baseline" else "–"

    api_columns = (
        [
            Column(
                "$ / 1,000 queries",
                lambda row: (
                    f"{row['cost_per_1k_queries_usd']:.4f}" if pd.notna(row["cost_per_1k_queries_usd"]) else "–"
                ),
                numeric=True,
            ),
            Column(
                "Failed requests",
                lambda row: (
                    f"{row['api_failed_rows']:.0f} of {row['n_examples']:.0f}"
                    if pd.notna(row["api_failed_rows"])
                    else "–"
                ),
                numeric=True,
            ),
        ]
        if api
        else []
    )
    return Table(
        caption=(
            f"What each model costs: training time in {unit} (a two-stage run includes its first stage), "
            "tokens trained, and the mean prompt and generated tokens per test query, beside the task's "
            f"primary metric ({primaries}) and its gain over the prompted baseline of the same model."
        ),
        frame=frame,
        columns=[
            Column("Task", lambda row: labels.task(row["task"], known)),
            Column("Model", labels.model),
            Column("Run", lambda row: labels.run(row, known)),
            Column("Hardware", when_trained(lambda row: f"{row['device_kind']} × {row['num_processes']:.0f}")),
            Column(f"Training ({unit})", when_trained(lambda row: hours(row["device_hours"])), numeric=True),
            Column(
                "Training wall time (hours)",
                when_trained(lambda row: hours(row["train_wall_time_s"] / 3600)),
                numeric=True,
            ),
            Column("Tokens trained", when_trained(lambda row: count(row["train_tokens"])), numeric=True),
            Column("Prompt tokens / query", lambda row: plain(row["prompt_tokens_mean"]), numeric=True),
            Column("Generated tokens / query", lambda row: plain(row["generated_tokens_mean"]), numeric=True),
            Column("Primary metric (%)", lambda row: number(row["value_pct"]), numeric=True),
            Column("Gain (points)", when_trained(lambda row: signed(row["gain_points"])), numeric=True),
            *api_columns,
        ],
        csv=[
            *HEADLINE_FIELDS,
            "device_kind",
            "num_processes",
            "device_hours",
            "train_tokens",
            "train_wall_time_s",
            "peak_memory_mb",
            "prompt_tokens_mean",
            "generated_tokens_mean",
            "eval_wall_time_s",
            "metric",
            "value_pct",
            "gain_points",
            *(("cost_per_1k_queries_usd", "api_failed_rows") if api else ()),
        ],
        rounded=("value_pct", "gain_points"),
        note=(
            "A CPU-hour is an hour of CPU time (user and system) that the training processes used over their "
            "optimizer steps, however many cores the job was given; a GPU-hour is one GPU held for an hour (wall "
            "time × the job's GPUs, busy or not). Wall time is the optimizer steps' time, beside it."
            + (
                " An API model's price is per 1,000 test queries at its configured prices per million "
                "tokens; a failed request leaves its row unscored."
                if api
                else ""
            )
        ),
    )


def ablation_table(metrics: pd.DataFrame, task: str, known: TaskSet) -> Table:
    frame = metrics[(metrics["task"] == task) & (metrics["stage"] == "finetuned")]
    pairs = frame.groupby(["model", "method"])["format"].nunique()
    pairs = pairs[pairs > 1].index
    frame = frame[frame.set_index(["model", "method"]).index.isin(pairs)]
    if frame.empty:
        raise UserError(
            f"results/metrics.csv has no {task} runs of one model and method in two prompt formats; "
            "add a finetune entry with another format to the config."
        )
    names = _metric_order(frame)
    records = []
    for _, run in _runs(frame).iterrows():
        cells = frame[(frame["model"] == run["model"]) & (frame["run"] == run["run"])].set_index("metric")
        record = {column: run[column] for column in ("model", "size", "method", "format", "run")}
        for name in names:
            m = cells.loc[name] if name in cells.index else None
            record |= {
                name: m["value"] * 100 if m is not None else math.nan,
                f"{name}_ci_low": m["ci_low"] * 100 if m is not None else math.nan,
                f"{name}_ci_high": m["ci_high"] * 100 if m is not None else math.nan,
            }
        records.append(record | {"prompt_tokens_mean": run["prompt_tokens_mean"]})
    table = pd.DataFrame(records)
    percents = [f"{name}{suffix}" for name in names for suffix in ("", "_ci_low", "_ci_high")]
    return Table(
        caption=(
            f"{labels.task(task, known)}: the same model and method fine-tuned with the special-token format and "
            "with a natural-language instruction format (percent, with bootstrap intervals)."
        ),
        frame=table,
        columns=[
            Column("Model", labels.model),
            Column("Method", lambda row: labels.method(row["method"])),
            Column("Format", lambda row: labels.fmt(row["format"])),
        ]
        + [Column(labels.metric(name) + " (%)", _percent_interval(name), numeric=True) for name in names]
        + [Column("Prompt tokens / query", lambda row: plain(row["prompt_tokens_mean"]), numeric=True)],
        csv=list(table.columns),
        rounded=tuple(percents),
    )


def claims_table(claims: pd.DataFrame, declared: bool = False, *, known: TaskSet) -> Table:
    """Each claim of the studies (or with ``declared`` each comparison of the config), per pair of runs: the
    paired difference, its interval and the verdict.

    The published figure behind each claim stays in the CSV; the printed table keeps to what fits a page.
    """
    claims = (tb_claims.comparisons if declared else tb_claims.studies)(claims)
    identity = ("claim", "task", "metric", "model", "size", "better_run", "than_run", "n", "label", "published")
    if declared:  # a declared comparison may pair two models
        identity = (*identity[:6], "than_model", *identity[6:])
    # The spread over training seeds shows only where some run was trained with more than one seed.
    with_seeds = "seeds" in claims and bool((claims["seeds"].fillna(1) > 1).any())
    shown = ("difference", "ci_low", "ci_high", *(("seed_low", "seed_high") if with_seeds else ()))
    records = []
    for _, row in claims.iterrows():
        ran = row["label"] != "not run"
        records.append(
            {key: row[key] for key in identity}
            | {key: row[key] * 100 if ran else math.nan for key in shown}
            | {"statement": row["statement"], "seeds": row["seeds"] if with_seeds else math.nan}
        )
    frame = pd.DataFrame(records)

    def when_ran(show: Callable[[pd.Series], str]) -> Callable[[pd.Series], str]:
        return lambda row: show(row) if row["label"] != "not run" else "–"

    def over_seeds(row: pd.Series) -> str:
        if not row["seeds"] > 1 or pd.isna(row["seed_low"]):
            return "–"
        return f"{row['seeds']:.0f}: {signed(row['seed_low'])} to {signed(row['seed_high'])}"

    caption = (
        ("The comparisons this config declares" if declared else "The case studies' claims on these runs")
        + ": the mean paired difference on the same test rows, in points, with its paired bootstrap interval; "
        "reproduced when the interval lies above zero, contradicted when below, undecided when it holds zero."
    )
    if with_seeds:
        caption += (
            " Over seeds: how many training seeds the first run was trained with, and the lowest and highest "
            "mean difference among them (training variance, which the interval over test rows does not show)."
        )
    return Table(
        caption=caption,
        frame=frame,
        columns=[
            Column("Claim", lambda row: row["statement"]),
            Column("Size", when_ran(lambda row: str(row["size"]))),
            Column(
                "Compared on",
                when_ran(
                    lambda row: (
                        f"{labels.task(row['task'], known)}: {row['model']} {row['better_run']} vs "
                        f"{row['than_model']} {row['than_run']}"
                        if declared
                        else f"{labels.task(row['task'], known)}: {row['better_run']} vs {row['than_run']}"
                    )
                ),
            ),
            Column("n", when_ran(lambda row: f"{row['n']:.0f}"), numeric=True),
            Column(
                "Difference (points)",
                when_ran(
                    lambda row: (
                        interval(row["difference"], row["ci_low"], row["ci_high"], show=signed) if row["n"] else "–"
                    )
                ),
                numeric=True,
            ),
            *([Column("Over seeds", when_ran(over_seeds), numeric=True)] if with_seeds else []),
            Column("Verdict", lambda row: row["label"]),
        ],
        csv=[*identity, *(("seeds",) if with_seeds else ()), *shown],
        rounded=shown,
    )


#: What draws each kind of table (see :class:`tunebench.results.Output`); per-task ones take the task.
BUILDERS = {
    "main": main_table,
    "task": task_table,
    "published": published_table,
    "cost": cost_table,
    "ablation_format": ablation_table,
}


def build(output: Output, metrics: pd.DataFrame, claims: pd.DataFrame | None = None, *, known: TaskSet) -> Table:
    """The table ``output`` names; ``known`` (the experiment's tasks) labels them."""
    if output.draws in ("claims", "comparisons"):
        if claims is None:
            raise UserError(f"the {output.draws} table needs results/claims.csv; run `tunebench claims` first.")
        table = claims_table(claims, declared=output.draws == "comparisons", known=known)
    elif output.task:
        table = BUILDERS[output.draws](metrics, output.task, known)
    else:
        table = BUILDERS[output.draws](metrics, known)
    table.name = output.name
    return table


# -- writers -------------------------------------------------------------------------------------


def _bolded(text: pd.DataFrame, bold: pd.DataFrame, wrap: Callable[[str], str]) -> pd.DataFrame:
    return text.where(~bold, text.map(wrap))


def to_markdown(table: Table) -> str:
    text = table.text().map(lambda cell: cell.replace("|", "\\|"))
    # Without alignment tabulate leaves cells unpadded; the alignment row is then written here.
    body = _bolded(text, table.bold(), lambda cell: f"**{cell}**").to_markdown(
        index=False, tablefmt="pipe", stralign=None, numalign=None, disable_numparse=True
    )
    lines = body.split("\n")
    lines[1] = "|" + "|".join("---:" if column.numeric else ":---" for column in table.columns) + "|"
    parts = [f"*{table.caption}*", "", *lines]
    if table.note:
        parts += ["", table.note]
    return "\n".join(parts) + "\n"


def _latex_header(text: str) -> str:
    """Long headers on two lines, split at the space nearest the middle, so columns stay narrow."""
    words = text.split(" ")
    if len(text) <= 12 or len(words) < 2:
        return latex_escape(text)
    cut = min(range(1, len(words)), key=lambda k: abs(len(" ".join(words[:k])) - len(text) / 2))
    top, bottom = " ".join(words[:cut]), " ".join(words[cut:])
    return r"\begin{tabular}[b]{@{}c@{}}" + latex_escape(top) + r"\\" + latex_escape(bottom) + r"\end{tabular}"


def to_latex(table: Table) -> str:
    text = table.text().map(latex_escape)
    bold = table.bold()
    text.columns = bold.columns = [_latex_header(column.header) for column in table.columns]
    styler = text.style.hide(axis="index").apply(
        lambda column: bold[column.name].map({True: "textbf:--rwrap;", False: ""}), axis=0
    )
    spec = "".join("r" if column.numeric else "l" for column in table.columns)
    latex = styler.to_latex(hrules=True, column_format=f"@{{}}{spec}@{{}}")
    return f"% {table.name}: generated by `tunebench tables` from results/metrics.csv; needs booktabs.\n" + latex


def write(table: Table, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{table.name}.{ext}" for ext in ("csv", "md", "tex")]
    fileio.write_atomic(paths[0], table.csv_frame().to_csv(index=False, lineterminator="\n"))
    fileio.write_atomic(paths[1], to_markdown(table))
    fileio.write_atomic(paths[2], to_latex(table))
    return paths


def write_all(
    outputs: Iterable[Output],
    metrics: pd.DataFrame,
    out_dir: Path,
    claims: pd.DataFrame | None = None,
    *,
    known: TaskSet,
) -> list[Path]:
    return [path for output in outputs for path in write(build(output, metrics, claims, known=known), out_dir)]
