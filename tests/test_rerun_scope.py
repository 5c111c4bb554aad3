"""What an edit re-runs, by Snakemake's own dry run over a completed tiny workflow: a scorer's settings or
source re-score (no generation), a task's max_new_tokens regenerates that task only, the decoder's source
regenerates every run, params_b reaches the results stage only."""

from __future__ import annotations

import shutil

import pytest
import yaml

from test_workflow import _scheduled, _up_to_date_demo, snakemake
from tunebench.config import code as tb_code

RESULTS_RULES = {"settings_results", "aggregate", "claims", "tables", "figures", "paper", "all"}


@pytest.fixture(scope="module")
def completed(repo_root, tmp_path_factory):
    """The tiny config's every output, as empty files marked up to date (--touch) with Snakemake's metadata:
    planning needs their times and recorded params, not their contents."""
    root = tmp_path_factory.mktemp("rerun-scope")
    config = root / "tiny.yaml"
    shutil.copy(repo_root / ".test" / "config.yaml", config)
    workdir = root / "work"
    _up_to_date_demo(repo_root, workdir, config)
    return workdir, yaml.safe_load(config.read_text())


def _planned(repo_root, tmp_path, completed, edit=None, env=None) -> dict[str, str]:
    workdir, cfg = completed
    cfg = yaml.safe_load(yaml.safe_dump(cfg))
    if edit:
        edit(cfg)
    # The same path as the completed run's config: rules pass it as a param, so another path would re-run all.
    config = workdir.parent / "tiny.yaml"
    original = config.read_text()
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    try:
        dry = snakemake(
            repo_root,
            *("-s", str(repo_root / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), "-n"),
            env=env,
        )
    finally:
        config.write_text(original)
    assert dry.returncode == 0, dry.stderr[-2000:]
    return _scheduled(dry.stdout)


def _edited_package(tmp_path, relative: str) -> dict:
    """A copy of the package with one file edited (a comment appended), named by TUNEBENCH_CODE_ROOT: the
    digests hash the copy's files, and the installed package is never touched."""
    copy = tmp_path / "tunebench"
    shutil.copytree(tb_code.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / relative, "a") as handle:
        handle.write("# edited\n")
    return {tb_code.CODE_ROOT_ENV: str(copy)}


def test_nothing_is_planned_without_an_edit(repo_root, tmp_path, completed):
    assert _planned(repo_root, tmp_path, completed) == {}


def test_a_scorer_setting_rescores_that_task_only(repo_root, tmp_path, completed):
    def edit(cfg):
        cfg.setdefault("evaluation", {})["sql_timeout_s"] = 3.5

    jobs = _planned(repo_root, tmp_path, completed, edit)
    assert set(jobs.values()) - RESULTS_RULES == {"score", "settings_score"}
    scored = sorted(job for job, rule in jobs.items() if rule == "score")
    assert scored == [
        "results/eval/sql/tiny-llama/baseline/predictions.jsonl",
        "results/eval/sql/tiny-llama/lora/predictions.jsonl",
    ]


def test_one_tasks_max_new_tokens_regenerates_that_task_only(repo_root, tmp_path, completed):
    def edit(cfg):
        cfg["tasks"]["viggo"]["max_new_tokens"] = 12

    jobs = _planned(repo_root, tmp_path, completed, edit)
    assert set(jobs.values()) - RESULTS_RULES == {"generate", "settings_generate", "score", "settings_score"}
    generated = {job.split("/")[4] for job, rule in jobs.items() if rule == "generate"}
    assert generated == {"baseline", "lora", "full", "qlora", "dora", "lora-instruction"}
    assert all("/viggo/" in job for job, rule in jobs.items() if rule not in RESULTS_RULES)


def test_params_b_reruns_the_results_stage_only(repo_root, tmp_path, completed):
    def edit(cfg):
        cfg["models"]["tiny-llama"]["params_b"] = 0.000005

    jobs = _planned(repo_root, tmp_path, completed, edit)
    assert "aggregate" in jobs.values() and set(jobs.values()) <= RESULTS_RULES


def test_editing_a_scorers_source_rescores_that_task(repo_root, tmp_path, completed):
    env = _edited_package(tmp_path, "tasks/scoring/viggo.py")
    jobs = _planned(repo_root, tmp_path, completed, env=env)
    assert set(jobs.values()) - RESULTS_RULES == {"score", "settings_score"}
    assert len([rule for rule in jobs.values() if rule == "score"]) == 6
    assert all("/viggo/" in job for job, rule in jobs.items() if rule not in RESULTS_RULES)


def test_editing_the_decoder_regenerates_every_run(repo_root, tmp_path, completed):
    env = _edited_package(tmp_path, "stages/generate.py")
    jobs = _planned(repo_root, tmp_path, completed, env=env)
    assert set(jobs.values()) - RESULTS_RULES == {"generate", "settings_generate", "score", "settings_score"}
    assert len([rule for rule in jobs.values() if rule == "generate"]) == 14  # every evaluated run, no training


def test_a_declared_tasks_scorer_keys_reach_its_scoring_digest_only(repo_root, tmp_path):
    """A declared task's pattern is its scorer's: it changes the scoring digest, not the data or generation one;
    its max_new_tokens changes the generation digest, not the data one."""
    from tunebench import config as tb_config
    from tunebench.config import digests as tb_digests

    def digests(**section):
        cfg = yaml.safe_load((repo_root / ".test" / "config.yaml").read_text())
        cfg["tasks"]["tickets"] = {
            "kind": "custom",
            "source": {"jsonl": str(tmp_path / "tickets.jsonl")},
            "input": "text",
            "target": "label",
            "scorer": "regex",
            **section,
        }
        cfg["experiments"] = {"finetune": [], "baselines": [{"task": "tickets", "models": ["tiny-llama"]}]}
        cfg = tb_config.validate(cfg)
        job = ("tickets", "tiny-llama", "baseline")
        return (
            tb_digests.data_hash(cfg, "tickets"),
            tb_digests.generate_hash(cfg, *job),
            tb_digests.score_hash(cfg, *job),
        )

    data, generate, score = digests(pattern="^(yes|no)")
    other_pattern = digests(pattern="(yes|no)$")
    assert other_pattern[:2] == (data, generate) and other_pattern[2] != score
    longer = digests(pattern="^(yes|no)", max_new_tokens=9)
    assert longer[0] == data and longer[1] != generate and longer[2] != score
