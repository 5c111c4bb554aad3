"""``tunebench summary``: the last lines of the demo, on contract-shaped results."""

from __future__ import annotations

from test_results_aggregate import write_synthetic
from tunebench.commands import cli
from tunebench.results import aggregate


def test_summary_shows_the_primary_metrics_and_the_paths(demo_config, tmp_path, capsys):
    write_synthetic(demo_config, tmp_path)
    aggregate.write(demo_config, tmp_path, tmp_path / "metrics.csv", tmp_path / "learning_curves.csv")
    assert cli.main(["summary", "--results", str(tmp_path), "--rerun", "make demo"]) == 0
    out = capsys.readouterr().out
    assert "execution_accuracy" in out and "baseline" in out and "lora" in out
    assert "exact_match" not in out and "parse_rate" not in out  # only each task's primary metric
    assert f"paper: {tmp_path / 'paper' / 'tunebench.pdf'}  (missing)" in out
    assert f"metrics: {tmp_path / 'metrics.csv'}" in out and "metrics.csv  (missing)" not in out


def test_summary_says_how_to_get_the_pdf_when_tex_is_missing(demo_config, tmp_path, capsys, monkeypatch):
    write_synthetic(demo_config, tmp_path)
    aggregate.write(demo_config, tmp_path, tmp_path / "metrics.csv", tmp_path / "learning_curves.csv")
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert cli.main(["summary", "--results", str(tmp_path), "--rerun", "make demo"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == (
        "The paper PDF was not built: latexmk and pdflatex not found; install LaTeX with `apt-get install "
        "latexmk texlive-latex-base texlive-latex-recommended texlive-fonts-recommended` (Debian/Ubuntu), "
        "then run `make demo` again (it builds only the paper)."
    )
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "tunebench.pdf").write_bytes(b"%PDF-1.5\n")
    assert cli.main(["summary", "--results", str(tmp_path), "--rerun", "make demo"]) == 0
    assert "was not built" not in capsys.readouterr().out


def test_summary_of_a_folder_without_results_fails_and_says_what_to_run(tmp_path, capsys):
    assert cli.main(["summary", "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'results'} holds no results" in err and "run `tunebench run CONFIG` first" in err
    assert "make demo" not in err and len(err.strip().splitlines()) == 1
