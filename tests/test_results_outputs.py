"""Tables, figures and the paper, drawn from synthetic records that follow the stage contracts."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_results_aggregate import write_synthetic
from tunebench import config as tb_config
from tunebench.commands import cli
from tunebench.results import aggregate, claims, figures, labels, paper, plan, published, tables

REPO = tb_config.ROOT
CASE_STUDIES = REPO.parent / "shared" / "reference" / "case-studies.md"


def build_results(config: dict, root: Path, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    write_synthetic(config, root, seed=seed)
    aggregate.write(config, root, root / "metrics.csv", root / "learning_curves.csv")
    claims.write(config, root, root / "claims.csv")
    return aggregate.read_metrics(root / "metrics.csv"), aggregate.read_curves(root / "learning_curves.csv")


def decided(root: Path) -> pd.DataFrame:
    return claims.read(root / "claims.csv")


@pytest.fixture(scope="module")
def demo_results(demo_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    metrics, curves = build_results(demo_config, root)
    known = demo_config.tasks
    tables.write_all(plan(demo_config).of("table"), metrics, root / "tables", decided(root), known=known)
    figures.write_all(plan(demo_config).of("figure"), metrics, curves, root / "figures", decided(root), known=known)
    return root, metrics, curves


def test_every_table_in_three_formats(demo_config, demo_results):
    root, metrics, _ = demo_results
    for name in plan(demo_config).tables:
        for ext in ("csv", "md", "tex"):
            assert (root / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    viggo = metrics[
        (metrics["task"] == "viggo") & (metrics["run"] == "qlora") & (metrics["metric"] == "function_accuracy")
    ].iloc[0]
    cell = f"{viggo['value'] * 100:.1f} [{viggo['ci_low'] * 100:.1f}, {viggo['ci_high'] * 100:.1f}]"
    assert cell in (root / "tables" / "viggo.md").read_text()
    latex = (root / "tables" / "viggo.tex").read_text()
    assert cell in latex and r"\toprule" in latex and r"\bottomrule" in latex
    csv = pd.read_csv(root / "tables" / "viggo.csv")
    assert csv.loc[csv["run"] == "qlora", "function_accuracy"].item() == round(viggo["value"] * 100, 1)
    # The best value of a column is bold, and only that one.
    best = metrics[(metrics["task"] == "viggo") & (metrics["metric"] == "exact_match")]["value"].max()
    assert len(re.findall(rf"\*\*{best * 100:.1f} \[", (root / "tables" / "viggo.md").read_text())) == 1


def test_cost_table_sets_prompt_tokens_of_baseline_and_fine_tuned_side_by_side(demo_results):
    root, metrics, _ = demo_results
    cost = pd.read_csv(root / "tables" / "cost.csv")
    primary = metrics[metrics["primary"]]
    sql = cost[cost["task"] == "sql"].set_index("run")
    assert (
        sql.loc["baseline", "prompt_tokens_mean"]
        == primary[(primary["task"] == "sql") & (primary["run"] == "baseline")]["prompt_tokens_mean"].item()
    )
    assert pd.isna(sql.loc["baseline", "device_hours"]) and sql.loc["lora", "device_hours"] > 0
    gain = (
        primary[(primary["task"] == "sql") & (primary["run"] == "lora")]["value"].item()
        - primary[(primary["task"] == "sql") & (primary["run"] == "baseline")]["value"].item()
    ) * 100
    assert sql.loc["lora", "gain_points"] == round(gain, 1)


def test_published_figures_are_the_ones_the_case_studies_state():
    text = CASE_STUDIES.read_text()
    figures_ = published.load()
    assert figures_["id"].is_unique
    for _, row in figures_.iterrows():
        value = f"{row['value']:,.0f}" if row["value"] >= 1000 else f"{row['value']:g}"
        assert re.search(rf"(?<![\d.]){re.escape(value)}(?![\d])", text), (
            f"{row['id']}: {value} is not in case-studies.md"
        )
        assert row["source"].startswith(("seeds/", "ray-project/ray"))


def test_published_against_reproduced(paper_config, demo_results, tmp_path):
    metrics, _ = build_results(paper_config, tmp_path)
    compared = published.compare(published.load(), metrics).set_index("id")
    ours = (
        metrics[
            (metrics["task"] == "viggo")
            & (metrics["model"] == "llama2-13b")
            & (metrics["run"] == "full")
            & (metrics["metric"] == "attributes_accuracy")
        ]["value"].item()
        * 100
    )
    row = compared.loc["viggo-13b-finetuned"]
    assert row["reproduced"] == pytest.approx(ours)
    assert row["difference"] == pytest.approx(ours - 98)
    assert row["match"] == "same setting"
    base = metrics[
        (metrics["task"] == "gsm8k")
        & (metrics["model"] == "llama2-13b")
        & (metrics["run"] == "baseline")
        & (metrics["metric"] == "flexible_accuracy")
    ]["value"].item()
    tuned = metrics[
        (metrics["task"] == "gsm8k")
        & (metrics["model"] == "llama2-13b")
        & (metrics["run"] == "full")
        & (metrics["metric"] == "flexible_accuracy")
    ]["value"].item()
    assert compared.loc["gsm8k-13b-gain", "reproduced"] == pytest.approx((tuned - base) * 100)
    # Reference models (GPT-4) are drawn as lines, not matched to our runs.
    assert "viggo-gpt4" not in compared.index

    _, demo_metrics, _ = demo_results
    demo = published.compare(published.load(), demo_metrics).set_index("id")
    assert demo.loc["viggo-13b-finetuned", "our_size"] == "135M"
    assert demo.loc["viggo-13b-finetuned", "match"] == "size"
    assert demo.loc["sql-13b-finetuned", "match"] == "size, method"


def test_figures_are_written_and_reproducible(demo_config, demo_results, tmp_path):
    root, metrics, curves = demo_results
    for name in plan(demo_config).figures:
        for ext in ("png", "pdf"):
            assert (root / "figures" / f"{name}.{ext}").stat().st_size > 10_000, (name, ext)
    chosen = [plan(demo_config).output("figure", "viggo_accuracy")]
    again = figures.write_all(chosen, metrics, curves, tmp_path, known=demo_config.tasks)
    assert [p.read_bytes() for p in again] == [(root / "figures" / p.name).read_bytes() for p in again]


def test_learning_curve_panels_show_whole_epochs_and_colour_each_star(demo_config, demo_results):
    _, _, curves = demo_results
    # Some runs stop after one epoch: their panels must still show epochs 1..N, not fractions of one.
    assert (curves.groupby(["task", "run"])["epoch"].max() == 1).any()
    fig = figures.learning_curves(curves, demo_config.tasks)
    last = int(curves["epoch"].max())
    task_of = {labels.task(t, demo_config.tasks): t for t in curves["task"].unique()}
    panels = [ax for ax in fig.axes if ax.get_title() in task_of]
    assert len(panels) == len(task_of)
    for ax in panels:
        assert list(ax.get_xticks()) == list(range(1, last + 1)), ax.get_title()
        selected = curves[(curves["task"] == task_of[ax.get_title()]) & curves["selected"]]
        (stars,) = [c for c in ax.collections if len(c.get_sizes()) and c.get_sizes()[0] == figures.STAR_SIZE]
        assert len(stars.get_offsets()) == len(selected)
        # One colour per run, so a lone one-epoch star still says which run it is.
        colours = {tuple(np.round(c[:3], 6)) for c in stars.get_facecolors()}
        assert len(colours) == selected["run"].nunique()
    figures.plt.close(fig)


@pytest.mark.slow
def test_figures_of_the_paper_matrix(paper_config, tmp_path):
    metrics, curves = build_results(paper_config, tmp_path, seed=5)
    written = figures.write_all(
        plan(paper_config).of("figure"),
        metrics,
        curves,
        tmp_path / "figures",
        decided(tmp_path),
        known=paper_config.tasks,
    )
    assert len(written) == 2 * len(plan(paper_config).figures)


def _paper_text(config, root: Path, build: Path) -> str:
    paper.write_sources(
        config,
        ["config/demo.yaml"],
        aggregate.read_metrics(root / "metrics.csv"),
        aggregate.read_curves(root / "learning_curves.csv"),
        root / "tables",
        root / "figures",
        build,
        decided(root),
    )
    return "\n".join(p.read_text() for p in sorted((build / "generated").glob("*.tex")))


def test_a_changed_metric_changes_the_table_and_the_paper_text(demo_config, demo_results, tmp_path):
    source, _, _ = demo_results
    root = tmp_path / "results"
    shutil.copytree(source, root)
    before_table = (root / "tables" / "viggo.md").read_text()
    before_paper = _paper_text(demo_config, root, tmp_path / "build")
    assert "83.7" not in before_table

    path = root / "eval/viggo/smollm2-135m/lora/metrics.json"
    doc = json.loads(path.read_text())
    doc["metrics"]["attributes_ordered_accuracy"].update(value=0.837, ci_low=0.761, ci_high=0.902)
    path.write_text(json.dumps(doc))
    metrics, _ = aggregate.write(demo_config, root, root / "metrics.csv", root / "learning_curves.csv")
    tables.write_all(
        plan(demo_config).of("table"),
        aggregate.read_metrics(root / "metrics.csv"),
        root / "tables",
        decided(root),
        known=demo_config.tasks,
    )
    after_table = (root / "tables" / "viggo.md").read_text()
    after_paper = _paper_text(demo_config, root, tmp_path / "build")

    assert "83.7 [76.1, 90.2]" in after_table and after_table != before_table
    assert "83.7 [76.1, 90.2]" in (root / "tables" / "viggo.tex").read_text()
    # The findings sentence of the task and the generated table the paper includes both follow.
    assert "LoRA reaches 83.7\\,\\% [76.1, 90.2]" in after_paper
    assert "83.7" not in before_paper
    assert "83.7 [76.1, 90.2]" in (tmp_path / "build/generated/tables/viggo.tex").read_text()


def test_paper_pdf_builds(demo_config, demo_results, tmp_path):
    root, _, _ = demo_results
    build = tmp_path / "build"
    main = paper.write_sources(
        demo_config,
        ["config/demo.yaml"],
        aggregate.read_metrics(root / "metrics.csv"),
        aggregate.read_curves(root / "learning_curves.csv"),
        root / "tables",
        root / "figures",
        build,
        decided(root),
    )
    numbers = (build / "generated" / "numbers.tex").read_text()
    # Every \tb{key} of the hand-written prose is generated.
    prose = "\n".join(
        line
        for line in (REPO / "paper" / "tunebench.tex").read_text().splitlines()
        if not line.lstrip().startswith("%")
    )
    used = set(re.findall(r"\\tb\{([^}]+)\}", prose))
    assert used and all(f"\\tbset{{{key}}}" in numbers for key in used)
    pdf = paper.compile_pdf(main, tmp_path / "tunebench.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    pages = re.search(r"Output written on tunebench\.pdf \((\d+) pages", main.with_suffix(".log").read_text())
    assert pages and int(pages.group(1)) >= 5


def test_an_unknown_number_key_stops_the_build(demo_config, demo_results, tmp_path):
    root, _, _ = demo_results
    main = paper.write_sources(
        demo_config,
        ["config/demo.yaml"],
        aggregate.read_metrics(root / "metrics.csv"),
        aggregate.read_curves(root / "learning_curves.csv"),
        root / "tables",
        root / "figures",
        tmp_path / "build",
        decided(root),
    )
    main.write_text(main.read_text().replace(r"\maketitle", r"\maketitle \tb{no-such-number}"))
    with pytest.raises(paper.LatexError, match="No generated value named no-such-number"):
        paper.compile_pdf(main, tmp_path / "tunebench.pdf")


def test_missing_latex_is_one_sentence_naming_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(
        paper.LatexError, match=r"latexmk and pdflatex not found; install LaTeX with `apt-get install latexmk"
    ):
        paper.compile_pdf(tmp_path / "tunebench.tex", tmp_path / "out.pdf")


def test_commands_name_unknown_outputs_and_missing_inputs(demo_results, tmp_path, capsys):
    root, _, _ = demo_results
    config = str(REPO / "config" / "demo.yaml")
    assert (
        cli.main(
            [
                "tables",
                "nonsense",
                "--config",
                config,
                "--metrics",
                str(root / "metrics.csv"),
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no table named nonsense; its tables are main, viggo" in capsys.readouterr().err
    assert (
        cli.main(["figures", "--config", config, "--metrics", str(tmp_path / "absent.csv"), "--out-dir", str(tmp_path)])
        == 2
    )
    assert "absent.csv is missing; run `tunebench aggregate`" in capsys.readouterr().err
    assert (
        cli.main(
            ["tables", "cost", "--config", config, "--metrics", str(root / "metrics.csv"), "--out-dir", str(tmp_path)]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cost.csv", "cost.md", "cost.tex"]


def test_awkward_results_still_give_every_output(tmp_path):
    """A run with no scorable row, fine-tuning that loses accuracy, and the tiny CI config's one size."""
    config = tb_config.load(REPO / ".test" / "config.yaml")
    write_synthetic(config, tmp_path, seed=2)
    path = tmp_path / "eval/sql/tiny-llama/lora/metrics.json"
    doc = json.loads(path.read_text())
    doc["unscorable"] = doc["n"]
    doc["metrics"] = {name: {"value": None, "ci_low": None, "ci_high": None, "n": 0} for name in doc["metrics"]}
    path.write_text(json.dumps(doc))
    path = tmp_path / "eval/viggo/tiny-llama/full/metrics.json"
    doc = json.loads(path.read_text())
    for entry in doc["metrics"].values():
        entry.update(value=0.0, ci_low=0.0, ci_high=0.0)
    path.write_text(json.dumps(doc))
    aggregate.write(config, tmp_path, tmp_path / "metrics.csv", tmp_path / "learning_curves.csv")
    claims.write(config, tmp_path, tmp_path / "claims.csv")
    metrics = aggregate.read_metrics(tmp_path / "metrics.csv")
    curves = aggregate.read_curves(tmp_path / "learning_curves.csv")
    chosen = plan(config)
    tables.write_all(chosen.of("table"), metrics, tmp_path / "tables", decided(tmp_path), known=config.tasks)
    figures.write_all(chosen.of("figure"), metrics, curves, tmp_path / "figures", decided(tmp_path), known=config.tasks)
    assert "| tiny-llama | LoRA | 8 | 8 | – | – | – |" in (tmp_path / "tables" / "sql.md").read_text()
    text = _paper_text(config, tmp_path, tmp_path / "build")
    assert "Full reaches 0.0\\,\\%" in text


def test_the_csv_holds_the_numbers_the_markdown_shows(paper_config, tmp_path):
    """Both round the same value the same way, also where a value lies close to a rounding boundary."""
    metrics, _ = build_results(paper_config, tmp_path, seed=5)
    chosen = plan(paper_config)
    for output in [chosen.output("table", task) for task in chosen.tasks] + [chosen.output("table", "main")]:
        table = tables.build(output, metrics, known=paper_config.tasks)
        csv, text = table.csv_frame(), table.text()
        for column in table.columns:
            if column.best or column.header == "Value (%)":
                source = column.best or "value_pct"
                shown = text[column.header].str.split(" ").str[0].str.strip("*")
                written = csv[source].map(lambda value: "–" if pd.isna(value) else f"{value:.1f}")
                assert shown.tolist() == written.tolist(), (output.name, column.header)
