"""The workflow itself: dry runs of both configs, lint, formatting and config errors before any job."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent


def snakemake(repo_root, *args, env=None, cwd=None):
    return subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=cwd or repo_root,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def dry_run(repo_root, workdir, config):
    """A dry run of the repository's workflow in ``workdir``, which holds no results: the test sees the
    whole matrix whatever the checkout's own results/ holds (a finished demo leaves nothing to schedule)."""
    return snakemake(
        repo_root,
        "-n",
        "--quiet",
        "rules",
        "-s",
        str(repo_root / "Snakefile"),
        "--configfile",
        str(repo_root / config),
        "--directory",
        str(workdir),
        cwd=workdir,
    )


def _job_counts(stdout: str) -> dict[str, int]:
    """Rule -> job count from the table a dry run prints."""
    counts = {}
    in_table = False
    for line in stdout.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
            if match and match.group(1) != "total":
                counts[match.group(1)] = int(match.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


def test_dry_run_lists_the_paper_matrix(repo_root, tmp_path):
    result = dry_run(repo_root, tmp_path, "config/config.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = _job_counts(result.stdout)
    # 3 tasks × 3 sizes × 3 methods + multiplication (7B × 3) + MathQA stage + two-stage + ablation
    assert counts["train"] == 27 + 3 + 1 + 1 + 1
    assert counts["generate"] == counts["score"] == (27 + 3 + 1 + 1) + 3 * 3 + 3 * 2
    assert sum(v for k, v in counts.items() if k.startswith("data_")) == 5


def test_dry_run_of_the_demo(repo_root, tmp_path):
    result = dry_run(repo_root, tmp_path, "config/demo.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = _job_counts(result.stdout)
    assert counts["train"] == 11 + 2  # eleven runs, and ViGGO LoRA twice more with other seeds
    assert (
        counts["generate"] == counts["score"] == 12 + 5
    )  # every trained run but the MathQA first stage, five baselines


def test_lint_is_clean(repo_root, tmp_path):
    result = snakemake(
        repo_root,
        "--lint",
        "-s",
        str(repo_root / "Snakefile"),
        "--configfile",
        str(repo_root / "config" / "demo.yaml"),
        "--directory",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_snakefmt_clean(repo_root):
    files = [
        "Snakefile",
        *sorted(str(p.relative_to(repo_root)) for p in (repo_root / "workflow" / "rules").glob("*.smk")),
    ]
    result = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_bad_config_stops_before_any_job_with_one_sentence(repo_root, tmp_path):
    cfg = yaml.safe_load((repo_root / "config" / "demo.yaml").read_text())
    cfg["methods"]["lora"]["learning_rate"] = -1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    result = snakemake(
        repo_root,
        "-n",
        "-s",
        str(repo_root / "Snakefile"),
        "--configfile",
        str(bad),
        "--directory",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "methods.lora.learning_rate" in result.stderr
    assert "Traceback" not in result.stderr


def _scheduled(stdout: str) -> dict[str, str]:
    """First output file -> rule of every job a (non-quiet) dry run schedules."""
    jobs, rule = {}, None
    for line in stdout.splitlines():
        match = re.match(r"^(?:local)?rule (\S+):$", line)
        if match:
            rule = match.group(1)
        elif rule and line.strip().startswith("output:"):
            jobs[line.split(":", 1)[1].split(",")[0].strip()] = rule
            rule = None
        elif rule and line.strip().startswith("jobid:"):  # `all` has no output
            jobs[rule] = rule
            rule = None
    return jobs


def _up_to_date_demo(repo_root, workdir: Path, config: Path) -> list[str]:
    """Every output of the demo, made as empty files and marked up to date (--touch), with metadata."""
    common = ["-s", str(repo_root / "Snakefile"), "--directory", str(workdir), "--configfile", str(config)]
    summary = snakemake(repo_root, *common, "--summary")
    assert summary.returncode == 0, summary.stderr[-2000:]
    outputs = [line.split("\t")[0] for line in summary.stdout.splitlines()[1:] if line.startswith("results/")]
    for name in outputs:
        path = workdir / name
        if name.endswith("/checkpoint"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    touched = snakemake(repo_root, *common, "--touch", "--cores", "1")
    assert touched.returncode == 0, touched.stderr[-2000:]
    return outputs


def _dry_run(repo_root, workdir: Path, config: Path) -> dict[str, str]:
    result = snakemake(
        repo_root, "-s", str(repo_root / "Snakefile"), "--directory", str(workdir), "--configfile", str(config), "-n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return _scheduled(result.stdout)


def _viggo_and_descendants(job: str) -> bool:
    return (
        "/viggo/" in job
        or job == "all"
        or job.startswith(
            (
                "results/metrics.csv",
                "results/claims.csv",
                "results/tables/",
                "results/figures/",
                "results/paper/",
                "results/settings/results/",
            )
        )
    )


def test_editing_one_key_reruns_that_task_and_its_descendants(repo_root, with_mirror, tmp_path):
    """With metadata (params trigger) and without it (a results/ copied alone: the settings stamps'
    modification times), editing tasks.viggo.limit.train schedules data_viggo and what depends on it."""
    config = tmp_path / "demo.yaml"
    config.write_text((repo_root / "config" / "demo.yaml").read_text())
    workdir = tmp_path / "work"
    outputs = _up_to_date_demo(repo_root, workdir, config)
    assert _dry_run(repo_root, workdir, config) == {}  # nothing to do before the edit

    # The copy keeps modification times (as cp -a, rsync -a or a tarball do) but not .snakemake/.
    copied = tmp_path / "copied"
    shutil.copytree(workdir / "results", copied / "results")
    assert not (copied / ".snakemake").exists()

    cfg = yaml.safe_load(config.read_text())
    cfg["tasks"]["viggo"]["limit"]["train"] = cfg["tasks"]["viggo"]["limit"]["train"] - 1
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    expected = {"results/data/viggo/train.jsonl", "all", "results/metrics.csv"}
    for where in (workdir, copied):
        jobs = _dry_run(repo_root, where, config)
        assert set(jobs.values()) >= {
            "data_viggo",
            "train",
            "generate",
            "score",
            "aggregate",
            "tables",
            "figures",
            "paper",
        }
        assert expected <= set(jobs), where
        assert all(_viggo_and_descendants(job) for job in jobs), f"{where}: {sorted(jobs)}"
        assert not any(rule.startswith("data_") and rule != "data_viggo" for rule in jobs.values())
        # every viggo job of the demo (data, training, evaluation) is scheduled, not just some
        viggo_jobs = {name for name in outputs if "/viggo/" in name}
        for name in viggo_jobs:
            if name.endswith(
                ("/train.jsonl", "/best.json", "/generations.jsonl", "/predictions.jsonl")
            ):  # first outputs
                assert name in jobs, f"{where}: {name} not re-run"

    # The probe that found the bug: the paper matrix's config over the demo's copied results/ must not
    # reuse the demo's data subsets; every data rule is scheduled.
    paper = _dry_run(repo_root, copied, repo_root / "config" / "config.yaml")
    assert sorted(rule for rule in paper.values() if rule.startswith("data_")) == [
        "data_gsm8k",
        "data_mathqa",
        "data_multiplication",
        "data_sql",
        "data_viggo",
    ]


def test_a_job_runs_without_the_venv_on_path_and_records_the_stamps_digest(repo_root, with_mirror, tmp_path):
    """Rules call the interpreter Snakemake runs under, so PATH needs no .venv/bin; the manifest the job
    writes records the same settings digest as the workflow's stamp (both from tunebench.config.digests)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TUNEBENCH_DATA_MIRROR": str(with_mirror)}
    result = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(repo_root / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(repo_root / "config" / "demo.yaml"),
            "--cores",
            "1",
            "results/data/multiplication/manifest.json",
            "results/data/viggo/manifest.json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for task in ("multiplication", "viggo"):
        manifest = json.loads((tmp_path / "results" / "data" / task / "manifest.json").read_text())
        (stamp_file,) = (tmp_path / "results" / "settings" / "data" / task).glob("*.json")
        stamp = json.loads(stamp_file.read_text())
        assert stamp_file.stem == stamp["settings_hash"]
        assert manifest["settings_hash"] == stamp["settings_hash"]
        assert stamp["settings"]["task"] == task and stamp["settings"]["seed"] == manifest["seed"]


STAMP_RULES = ("settings_data", "settings_train", "settings_generate", "settings_score", "settings_results")


def test_every_stamp_matches_what_the_commands_compute(repo_root, tmp_path):
    """The stamp jobs record, under their digest's name, the digests tunebench's loader gives."""
    from tunebench import config as tb_config
    from tunebench.config import digests as tb_digests

    result = snakemake(
        repo_root,
        "-s",
        str(repo_root / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(repo_root / "config" / "demo.yaml"),
        "--cores",
        "1",
        "--until",
        *STAMP_RULES,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = tb_config.load(repo_root / "config" / "demo.yaml")
    stamps = sorted((tmp_path / "results" / "settings").rglob("*.json"))
    assert len(stamps) == 5 + 13 + 17 + 17 + 1  # data, train, generate, score, results
    for path in stamps:
        *parts, name = path.relative_to(tmp_path / "results" / "settings").with_suffix("").parts
        recorded = json.loads(path.read_text())["settings_hash"]
        assert recorded == name
        if parts[0] == "data":
            assert recorded == tb_digests.data_hash(cfg, parts[1])
        elif parts[0] == "train":
            assert recorded == tb_digests.train_hash(cfg, *parts[1:])
        elif parts[0] == "generate":
            assert recorded == tb_digests.generate_hash(cfg, *parts[1:])
        elif parts[0] == "score":
            assert recorded == tb_digests.score_hash(cfg, *parts[1:])
        else:
            assert parts == ["results"] and recorded == tb_digests.results_hash(cfg)


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: its content's sha256 and its modification time."""
    import hashlib

    return {
        str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _other_settings(repo_root, tmp_path: Path) -> Path:
    """The tiny config with one data setting changed: other digests for ViGGO and all it feeds."""
    cfg = yaml.safe_load((repo_root / ".test" / "config.yaml").read_text())
    cfg["tasks"]["viggo"]["limit"]["train"] -= 1
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return edited


def test_a_dry_run_leaves_every_byte_of_results_as_it_was(repo_root, with_mirror, tmp_path):
    """Parsing the workflow (TeX probe included) writes nothing: a dry run, of the same settings or of
    edited ones, leaves the files under results/ and their modification times unchanged."""
    workdir = tmp_path / "work"
    tiny = ["-s", str(repo_root / "Snakefile"), "--directory", str(workdir)]
    for targets in (["--until", *STAMP_RULES], ["results/data/multiplication/manifest.json"]):
        made = snakemake(
            repo_root, *tiny, "--configfile", str(repo_root / ".test" / "config.yaml"), "--cores", "1", *targets
        )
        assert made.returncode == 0, made.stderr[-2000:]
    before = _tree(workdir / "results")
    assert any(name.startswith("settings/") for name in before) and "data/multiplication/train.jsonl" in before
    # Each dry run has jobs to list: the training of the same settings, the ViGGO stamp of the edited ones.
    for config, job in (
        (repo_root / ".test" / "config.yaml", "rule train:"),
        (_other_settings(repo_root, tmp_path), "results/settings/data/viggo/"),
    ):
        dry = snakemake(repo_root, *tiny, "--configfile", str(config), "-n")
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert job in dry.stdout
        assert _tree(workdir / "results") == before, config


def test_a_run_refused_by_anothers_lock_writes_nothing(repo_root, with_mirror, tmp_path):
    """While one snakemake holds the working directory's lock (a real run, stopped mid-job), a second with
    other settings is refused, and the results/ it found are byte for byte as they were."""
    workdir = tmp_path / "work"
    common = ["-s", str(repo_root / "Snakefile"), "--directory", str(workdir)]
    first = subprocess.Popen(
        [
            str(BIN / "snakemake"),
            *common,
            "--configfile",
            str(repo_root / ".test" / "config.yaml"),
            "--cores",
            "1",
            "results/data/viggo/manifest.json",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    locks = workdir / ".snakemake" / "locks"
    try:
        deadline = time.monotonic() + 120
        while not lock_files_left(locks) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGSTOP)  # holds the lock and writes nothing until killed
        assert lock_files_left(locks), "the first run finished before it could be stopped"
        before = _tree(workdir / "results") if (workdir / "results").is_dir() else {}
        edited = _other_settings(repo_root, tmp_path)
        second = snakemake(repo_root, *common, "--configfile", str(edited), "--cores", "1")
        assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr
        after = _tree(workdir / "results") if (workdir / "results").is_dir() else {}
        assert after == before
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def test_a_run_outside_the_repository_finds_the_paper_config(repo_root, tmp_path):
    result = snakemake(
        repo_root, "-s", str(repo_root / "Snakefile"), "--directory", str(tmp_path), "-n", "--quiet", "rules"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert _job_counts(result.stdout)["train"] == 27 + 3 + 1 + 1 + 1


@pytest.mark.parametrize(
    "extra, words",
    [
        ("\nseed: 7\n", ["'seed' repeats the one on line"]),
        ("\ntraining:\n  epochs: 1\n", ["'training' repeats the one on line"]),
    ],
)
def test_a_repeated_key_stops_the_workflow_in_one_sentence(repo_root, tmp_path, extra, words):
    config = tmp_path / "demo.yaml"
    config.write_text((repo_root / "config" / "demo.yaml").read_text() + extra)
    result = snakemake(
        repo_root, "-s", str(repo_root / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(config), "-n"
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("tunebench:"))
    assert str(config) in line and all(word in line for word in words)


def test_a_killed_runs_lock_is_cleared_only_when_no_snakemake_works_there(repo_root, with_mirror, tmp_path):
    """`make demo` runs tunebench.machinery.workflow_lock first: the stale lock of a SIGKILLed run goes (through
    snakemake --unlock), while the lock of a live run stays and the user is told in one sentence."""
    args = [
        "-s",
        str(repo_root / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(repo_root / "config" / "demo.yaml"),
    ]
    helper = [sys.executable, "-m", "tunebench.machinery.workflow_lock", "--", *args]
    assert subprocess.run(helper, capture_output=True, text=True, timeout=120).returncode == 0  # no lock: silent
    # A real run, SIGKILLed (with its job) once it holds the lock: it cannot remove the lock.
    # As make demo runs it: a job the kill cut short is redone rather than refused as incomplete, so what
    # refuses the next run is the lock alone, however far the killed run got.
    target = ["results/data/viggo/manifest.json", *args, "--cores", "1", "--rerun-incomplete"]
    run = subprocess.Popen(
        [str(BIN / "snakemake"), *target],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    locks = tmp_path / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while not (locks.is_dir() and any(locks.iterdir())) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert any(locks.iterdir()), "the run finished before it could be killed"
    blocked = snakemake(repo_root, *target)
    assert blocked.returncode != 0 and "cannot be locked" in blocked.stdout + blocked.stderr

    # A live snakemake in that directory (a stand-in that only sleeps): the lock is left alone.
    fake = tmp_path / "bin" / "snakemake"
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(120)\n")
    live = subprocess.Popen([sys.executable, str(fake)], cwd=tmp_path)
    try:
        kept = subprocess.run(helper, capture_output=True, text=True, timeout=120)
    finally:
        live.kill()
        live.wait()
    assert kept.returncode == 2 and f"process {live.pid}" in kept.stderr and len(kept.stderr.strip().splitlines()) == 1
    assert (locks / "0.output.lock").exists()

    cleared = subprocess.run(helper, capture_output=True, text=True, timeout=120)
    assert cleared.returncode == 0, cleared.stderr
    assert "was killed" in cleared.stderr
    assert not lock_files_left(locks)
    rerun = snakemake(repo_root, *target)
    assert rerun.returncode == 0, rerun.stderr[-2000:]


def test_make_demo_clears_a_stale_lock_first_and_needs_no_venv_on_path(repo_root):
    makefile = (repo_root / "Makefile").read_text()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in demo.splitlines()[1:]]
    # The config is checked before anything else, then a stale lock is cleared, then Snakemake runs.
    assert lines[0] == "$(BIN)/tunebench validate --config $(DEMO_CONFIG)"
    assert lines[1].startswith("$(BIN)/python -m tunebench.machinery.workflow_lock -- $(DEMO)")
    assert lines[2].startswith("$(BIN)/snakemake")
    assert "export PATH" not in makefile


def lock_files_left(locks: Path) -> list[Path]:
    return list(locks.iterdir()) if locks.is_dir() else []


def test_a_yaml_error_in_the_default_config_names_file_and_line(repo_root, tmp_path):
    """Snakemake's own reader would say only "not valid JSON or YAML"; tunebench's names file and line."""
    (tmp_path / "config").mkdir()
    broken = tmp_path / "config" / "config.yaml"
    broken.write_text("seed: 42\nmodels: [a, b\ntraining: {}\n")
    result = snakemake(repo_root, "-s", str(repo_root / "Snakefile"), "--directory", str(tmp_path), "-n")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("tunebench:"))
    assert "config/config.yaml line 3" in line and "not valid YAML" in line
