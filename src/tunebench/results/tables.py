"""Tables of ``results/metrics.csv``, each written as CSV, Markdown and a LaTeX booktabs tabular.

The CSV holds the numbers a reader would copy (percentages rounded to one decimal, intervals in
their own columns); Markdown and LaTeX hold the same numbers as display text. The LaTeX file is a
bare ``tabular`` so a document chooses the float, caption and size around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..errors import UserError
from . import labels
from . import published as tb_published

MINUS = "\u2212"


@dataclass
class Table:
    name: str
    caption: str
    data: pd.DataFrame  # machine-readable content (the CSV)
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]  # right-aligned columns
    bold: set[tuple[int, int]] = field(default_factory=set)
    note: str = ""


# -- number formatting ---------------------------------------------------------------------------

def pct(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value * 100:.1f}"


def with_interval(value: float, low: float, high: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return pct(value)
    return f"{pct(value)} [{pct(low)}, {pct(high)}]"


def signed(value: float, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{abs(value):.{digits}f}"
    return ("+" if value >= 0 else MINUS) + text


def count(value: float) -> str:
    """Large counts readably: 3,712,004 → 3.71M; small ones as integers."""
    if value is None or not math.isfinite(value):
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def hours(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}"


def plain(value: float, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def _round(series: pd.Series, factor: float = 100.0, digits: int = 1) -> pd.Series:
    return (series.astype(float) * factor).round(digits)


# -- the tables ----------------------------------------------------------------------------------

def _runs(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run (the metric-independent columns), in the order of metrics.csv."""
    return metrics.drop_duplicates(["task", "model", "run"])


def _metric_order(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["metric"]))


def _bold_best(rows_values: list[list[float]], first_column: int) -> set[tuple[int, int]]:
    bold = set()
    if len(rows_values) < 2:
        return bold
    for j in range(len(rows_values[0])):
        column = [r[j] for r in rows_values]
        finite = [v for v in column if v is not None and math.isfinite(v)]
        if finite:
            best = max(finite)
            bold |= {(i, first_column + j) for i, v in enumerate(column) if v == best}
    return bold


def main_table(metrics: pd.DataFrame, task: str) -> Table:
    frame = metrics[metrics["task"] == task]
    if frame.empty:
        raise UserError(f"results/metrics.csv has no rows for task {task}; run its evaluations and `tunebench aggregate` first.")
    names = _metric_order(frame)
    runs = _runs(frame)
    show_unscorable = bool((runs["unscorable"].fillna(0) > 0).any())
    header = ["Model", "Run", "n"] + (["Unscorable"] if show_unscorable else []) + [labels.metric(m) + " (%)" for m in names]
    rows, values, data = [], [], []
    for _, run in runs.iterrows():
        cells = frame[(frame["model"] == run["model"]) & (frame["run"] == run["run"])].set_index("metric")
        row = [labels.model(run), labels.run(run), f"{run['n_examples']:.0f}"]
        if show_unscorable:
            row.append(f"{run['unscorable']:.0f}")
        record = {c: run[c] for c in ("model", "size", "method", "stage", "format", "variant", "run", "n_examples", "unscorable")}
        found = []
        for name in names:
            if name in cells.index:
                m = cells.loc[name]
                row.append(with_interval(m["value"], m["ci_low"], m["ci_high"]))
                found.append(m["value"])
                record |= {name: m["value"], f"{name}_ci_low": m["ci_low"], f"{name}_ci_high": m["ci_high"]}
            else:
                row.append("–")
                found.append(math.nan)
        rows.append(row)
        values.append(found)
        data.append(record)
    table = pd.DataFrame(data)
    for name in names:
        for column in (name, f"{name}_ci_low", f"{name}_ci_high"):
            if column in table:
                table[column] = _round(table[column])
    first = 3 + show_unscorable
    return Table(
        name=task,
        caption=(f"{labels.task(task)}: share of test examples scored correct, in percent, with "
                 f"bootstrap confidence intervals in brackets; the best value per column is in bold."),
        data=table,
        header=header,
        rows=rows,
        numeric=[False, False] + [True] * (len(header) - 2),
        bold=_bold_best(values, first),
    )


def overview_table(metrics: pd.DataFrame) -> Table:
    """The headline: every run's primary metric, its gain over the prompted model and its prompt length."""
    primary = metrics[metrics["primary"]]
    header = ["Task", "Model", "Run", "Metric", "Value (%)", "Gain (points)", "Prompt tokens / query"]
    rows, data = [], []
    for _, run in primary.iterrows():
        base = primary[(primary["task"] == run["task"]) & (primary["model"] == run["model"])
                       & (primary["stage"] == "baseline") & (primary["variant"] == "default")]
        gain = (run["value"] - base["value"].iloc[0]) * 100 if run["stage"] != "baseline" and not base.empty else math.nan
        rows.append([labels.task(run["task"]), labels.model(run), labels.run(run), labels.metric(run["metric"]),
                     with_interval(run["value"], run["ci_low"], run["ci_high"]),
                     signed(gain) if run["stage"] != "baseline" else "–", plain(run["prompt_tokens_mean"])])
        data.append({"task": run["task"], "model": run["model"], "size": run["size"], "run": run["run"],
                     "stage": run["stage"], "metric": run["metric"], "value_pct": round(run["value"] * 100, 1),
                     "ci_low_pct": round(run["ci_low"] * 100, 1), "ci_high_pct": round(run["ci_high"] * 100, 1),
                     "gain_points": round(gain, 1), "n": run["n"], "prompt_tokens_mean": run["prompt_tokens_mean"]})
    return Table(
        name="main",
        caption=("Every run on its task's primary metric (percent of test examples, bootstrap interval in brackets) "
                 "and its gain over the prompted baseline of the same model."),
        data=pd.DataFrame(data),
        header=header,
        rows=rows,
        numeric=[False, False, False, False, True, True, True],
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


def published_table(metrics: pd.DataFrame) -> Table:
    compared = tb_published.compare(tb_published.load(), metrics)
    header = ["Study", "Task", "Figure", "Published model", "Published", "Our run", "Ours", "Difference", "Differs in"]
    rows = []
    digits = {"train_hours": 2, "epoch_tokens": 2, "devices": 0}
    for _, row in compared.iterrows():
        relation = "" if row["relation"] == "=" else f"{row['relation']} "
        ours = row["our_label"] or "–"
        places = digits.get(row["quantity"], 1)
        rows.append([
            row["study"], labels.task(row["task"]) if row["task"] else "all", _figure_label(row),
            row["published_model"], f"{relation}{row['published']:g}", ours, plain(row["reproduced"], places),
            signed(row["difference"], places), "–" if row["match"] == "same setting" else row["match"],
        ])
    return Table(
        name="published",
        caption=("Figures stated by the case studies beside the same quantity measured on our runs; the "
                 "difference is ours minus published, and the last column names what differs from the study's "
                 "setting: the model size, the fine-tuning method, or CPU processes in place of GPUs."),
        data=compared,
        header=header,
        rows=rows,
        numeric=[False, False, False, False, True, False, True, True, False],
        note="Study A: full fine-tuning of Llama-2 on ViGGO, SQL and GSM8K; study B: QLoRA on long multiplication.",
    )


def cost_unit(kinds: Iterable[str]) -> str:
    kinds = {k for k in kinds if k}
    return f"{kinds.pop()}-hours" if len(kinds) == 1 else "device-hours"


def cost_table(metrics: pd.DataFrame) -> Table:
    primary = metrics[metrics["primary"]]
    runs = primary[(primary["stage"] != "baseline") | (primary["variant"] == "default")]
    unit = cost_unit(runs.loc[runs["stage"] != "baseline", "device_kind"])
    header = ["Task", "Model", "Run", "Hardware", f"Training ({unit})", "Tokens trained", "Prompt tokens / query",
              "Generated tokens / query", "Primary metric (%)", "Gain (points)"]
    primaries = "; ".join(f"{labels.task(t)}: {labels.metric(m).lower()}"
                          for t, m in runs[["task", "metric"]].drop_duplicates().itertuples(index=False))
    # API baselines add their price and their failed requests; a config without one keeps the columns above.
    api = "api_cost_per_1k_queries_usd" in runs.columns
    if api:
        header += ["$ / 1,000 queries", "Failed requests"]
    rows, data = [], []
    for _, run in runs.iterrows():
        base = runs[(runs["task"] == run["task"]) & (runs["model"] == run["model"]) & (runs["stage"] == "baseline")]
        gain = (run["value"] - base["value"].iloc[0]) * 100 if run["stage"] != "baseline" and not base.empty else math.nan
        trained = run["stage"] != "baseline"
        hardware = f"{run['device_kind']} × {run['num_processes']:.0f}" if trained else "–"
        rows.append([
            labels.task(run["task"]), labels.model(run), labels.run(run), hardware,
            hours(run["device_hours_total"]) if trained else "–",
            count(run["train_tokens_total"]) if trained else "–",
            plain(run["prompt_tokens_mean"]), plain(run["generated_tokens_mean"]),
            pct(run["value"]),
            signed(gain) if trained else "–",
        ])
        data.append({
            "task": run["task"], "model": run["model"], "size": run["size"], "run": run["run"], "stage": run["stage"],
            "device_kind": run["device_kind"] if trained else "", "num_processes": run["num_processes"] if trained else math.nan,
            "device_hours": run["device_hours_total"], "train_tokens": run["train_tokens_total"],
            "train_wall_time_s": run["train_wall_time_s"], "peak_memory_mb": run["peak_memory_mb"],
            "prompt_tokens_mean": run["prompt_tokens_mean"], "generated_tokens_mean": run["generated_tokens_mean"],
            "eval_wall_time_s": run["eval_wall_time_s"], "metric": run["metric"],
            "value_pct": round(run["value"] * 100, 1) if math.isfinite(run["value"]) else math.nan,
            "gain_points": round(gain, 1) if math.isfinite(gain) else math.nan,
        })
        if api:
            cost, failed = run["api_cost_per_1k_queries_usd"], run["api_failed_rows"]
            rows[-1] += [f"{cost:.4f}" if pd.notna(cost) else "–", f"{failed:.0f} of {run['n_examples']:.0f}" if pd.notna(failed) else "–"]
            data[-1].update(cost_per_1k_queries_usd=cost, api_failed_rows=failed)
    return Table(
        name="cost",
        caption=(f"What each model costs: training time in {unit} (a two-stage run includes its first stage), "
                 "tokens trained, and the mean prompt and generated tokens per test query, beside the task's "
                 f"primary metric ({primaries}) and its gain over the prompted baseline of the same model."),
        data=pd.DataFrame(data),
        header=header,
        rows=rows,
        numeric=[False, False, False, False, True, True, True, True, True, True] + ([True, True] if api else []),
        note=("A GPU-hour is one GPU for an hour; a CPU-hour is one CPU core for an hour, counting the cores the "
              "job was given." + (" An API model's price is per 1,000 test queries at its configured prices per million "
                                  "tokens; a failed request leaves its row unscored." if api else "")),
    )


def ablation_table(metrics: pd.DataFrame, task: str) -> Table:
    frame = metrics[(metrics["task"] == task) & (metrics["stage"] == "finetuned")]
    pairs = frame.groupby(["model", "method"])["format"].nunique()
    pairs = pairs[pairs > 1].index
    frame = frame[frame.set_index(["model", "method"]).index.isin(pairs)]
    if frame.empty:
        raise UserError(f"results/metrics.csv has no {task} runs of one model and method in two prompt formats; "
                        "add a finetune entry with another format to the config.")
    names = _metric_order(frame)
    header = ["Model", "Method", "Format"] + [labels.metric(m) + " (%)" for m in names] + ["Prompt tokens / query"]
    rows, data = [], []
    for _, run in _runs(frame).iterrows():
        cells = frame[(frame["model"] == run["model"]) & (frame["run"] == run["run"])].set_index("metric")
        row = [labels.model(run), labels.method(run["method"]), labels.fmt(run["format"])]
        record = {"model": run["model"], "size": run["size"], "method": run["method"], "format": run["format"], "run": run["run"]}
        for name in names:
            m = cells.loc[name] if name in cells.index else None
            row.append(with_interval(m["value"], m["ci_low"], m["ci_high"]) if m is not None else "–")
            record |= {name: round(m["value"] * 100, 1) if m is not None else math.nan,
                       f"{name}_ci_low": round(m["ci_low"] * 100, 1) if m is not None else math.nan,
                       f"{name}_ci_high": round(m["ci_high"] * 100, 1) if m is not None else math.nan}
        row.append(plain(run["prompt_tokens_mean"]))
        record["prompt_tokens_mean"] = run["prompt_tokens_mean"]
        rows.append(row)
        data.append(record)
    return Table(
        name=f"ablation_format_{task}",
        caption=(f"{labels.task(task)}: the same model and method fine-tuned with the special-token format and "
                 "with a natural-language instruction format (percent, with bootstrap intervals)."),
        data=pd.DataFrame(data),
        header=header,
        rows=rows,
        numeric=[False, False, False] + [True] * (len(names) + 1),
    )


def claims_table(claims: pd.DataFrame) -> Table:
    """Each claim of the studies, per pair of runs: the paired difference, its interval and the verdict.

    The published figure behind each claim stays in the CSV; the printed table keeps to what fits a page.
    """
    header = ["Claim", "Size", "Compared on", "n", "Difference (points)", "Verdict"]
    rows, data = [], []
    for _, row in claims.iterrows():
        ran = row["label"] != "not run"
        compared = f"{labels.task(row['task'])}: {row['better_run']} vs {row['than_run']}" if ran else "–"
        interval = (f"{signed(row['difference'] * 100)} [{signed(row['ci_low'] * 100)}, {signed(row['ci_high'] * 100)}]"
                    if ran and row["n"] else "–")
        rows.append([row["statement"], str(row["size"]) if ran else "–", compared, f"{row['n']:.0f}" if ran else "–",
                     interval, row["label"]])
        data.append({key: row[key] for key in ("claim", "task", "metric", "model", "size", "better_run", "than_run",
                                               "n", "label", "published")}
                    | {key: round(row[key] * 100, 1) if ran and pd.notna(row[key]) else math.nan
                       for key in ("difference", "ci_low", "ci_high")})
    return Table(
        name="claims",
        caption=("The case studies' claims on these runs: the mean paired difference on the same test rows, in "
                 "points, with its paired bootstrap interval; reproduced when the interval lies above zero, "
                 "contradicted when below, undecided when it holds zero."),
        data=pd.DataFrame(data),
        header=header,
        rows=rows,
        numeric=[False, False, False, True, True, False],
    )


def build(name: str, metrics: pd.DataFrame, claims: pd.DataFrame | None = None) -> Table:
    if name == "claims":
        if claims is None:
            raise UserError("the claims table needs results/claims.csv; run `tunebench claims` first.")
        return claims_table(claims)
    if name == "main":
        return overview_table(metrics)
    if name == "published":
        return published_table(metrics)
    if name == "cost":
        return cost_table(metrics)
    if name.startswith("ablation_format_"):
        return ablation_table(metrics, name.removeprefix("ablation_format_"))
    return main_table(metrics, name)


# -- writers -------------------------------------------------------------------------------------

def to_markdown(table: Table) -> str:
    def cell(i, j, text):
        text = text.replace("|", "\\|")
        return f"**{text}**" if (i, j) in table.bold else text

    lines = [f"*{table.caption}*", "", "| " + " | ".join(table.header) + " |",
             "|" + "|".join("---:" if n else ":---" for n in table.numeric) + "|"]
    lines += ["| " + " | ".join(cell(i, j, t) for j, t in enumerate(row)) + " |" for i, row in enumerate(table.rows)]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "≈": r"$\approx$", ">": r"$>$", "<": r"$<$",
    "→": r"$\rightarrow$", "×": r"$\times$", MINUS: r"$-$", "–": "--",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex_header(text: str) -> str:
    """Long headers on two lines, split at the space nearest the middle, so columns stay narrow."""
    words = text.split(" ")
    if len(text) <= 12 or len(words) < 2:
        return latex_escape(text)
    cut = min(range(1, len(words)), key=lambda k: abs(len(" ".join(words[:k])) - len(text) / 2))
    top, bottom = " ".join(words[:cut]), " ".join(words[cut:])
    return r"\begin{tabular}[b]{@{}c@{}}" + latex_escape(top) + r"\\" + latex_escape(bottom) + r"\end{tabular}"


def to_latex(table: Table) -> str:
    spec = "".join("r" if n else "l" for n in table.numeric)

    def cell(i, j, text):
        text = latex_escape(text)
        return rf"\textbf{{{text}}}" if (i, j) in table.bold else text

    lines = [f"% {table.name}: generated by `tunebench tables` from results/metrics.csv; needs booktabs.",
             rf"\begin{{tabular}}{{@{{}}{spec}@{{}}}}", r"\toprule",
             " & ".join(_latex_header(h) for h in table.header) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(i, j, t) for j, t in enumerate(row)) + r" \\" for i, row in enumerate(table.rows)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write(table: Table, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{table.name}.{ext}" for ext in ("csv", "md", "tex")]
    table.data.to_csv(paths[0], index=False, lineterminator="\n")
    paths[1].write_text(to_markdown(table))
    paths[2].write_text(to_latex(table))
    return paths


def write_all(names: Iterable[str], metrics: pd.DataFrame, out_dir: Path,
              claims: pd.DataFrame | None = None) -> list[Path]:
    return [path for name in names for path in write(build(name, metrics, claims), out_dir)]

