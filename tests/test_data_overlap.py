"""Duplicates and test rows copied into training: counted in the manifest, kept out of training by default."""

from __future__ import annotations

import json
import shutil

import pytest

from tunebench import config, tasks
from tunebench.commands import cli
from tunebench.results import paper
from tunebench.stages import dataset
from tunebench.tasks import data
from tunebench.util.errors import DataError, UserError


def _leaky_mirror(mirror, tmp_path):
    """The real ViGGO files with 20 test rows appended to train (one re-cased and re-spaced) and one
    training row copied three more times."""
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / "viggo", copy / "viggo")
    test_lines = (mirror / "viggo" / "test.csv").read_text().splitlines()[1:21]
    train_lines = (mirror / "viggo" / "train.csv").read_text().splitlines()
    mr, sentence = data._csv_fields(test_lines[0])
    leaked = [f'"{mr}","  {sentence.upper()} "'] + test_lines[1:]
    with open(copy / "viggo" / "train.csv", "a") as handle:
        handle.write("\n".join(leaked + [train_lines[1]] * 3) + "\n")
    return copy, [data._csv_fields(line)[1] for line in test_lines]


def _run(tmp_path, mirror, policy):
    cfg = config.defaults()
    cfg["data"].update(mirror=str(mirror), overlap=policy, verify_sources=False)
    out = tmp_path / policy
    prepared, manifest = dataset.prepare("viggo", cfg)
    dataset.write(out, prepared, manifest)
    return out


def test_test_rows_copied_into_train_are_counted_and_dropped(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEBENCH_DATA_MIRROR", raising=False)
    leaky, sentences = _leaky_mirror(mirror, tmp_path)
    out = _run(tmp_path, leaky, "drop")
    manifest = json.loads((out / "manifest.json").read_text())["overlap"]
    assert manifest["test_overlap"]["train"]["input"] == {"exact": 19, "normalized": 20}
    assert manifest["test_overlap"]["train"]["input_target"] == {"exact": 19, "normalized": 20}
    # The real train split repeats 7 rows; the three copies add 3.
    assert manifest["duplicates"]["train"] == {"exact": 10, "normalized": 10}
    assert manifest["dropped"] == {"train": 30, "validation": 0}
    train = data.read_split(out, "train")
    assert len(train) == 5103 + 23 - 30
    prompts = {" ".join(row["prompt"].casefold().split()) for row in train}
    assert not prompts & {" ".join(s.casefold().split()) for s in sentences}


def test_keep_counts_without_dropping_and_fail_stops_with_one_sentence(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEBENCH_DATA_MIRROR", raising=False)
    leaky, _ = _leaky_mirror(mirror, tmp_path)
    manifest = json.loads((_run(tmp_path, leaky, "keep") / "manifest.json").read_text())
    assert manifest["overlap"]["flagged"]["train"] == 30 and manifest["overlap"]["dropped_total"] == 0
    assert manifest["rows"]["train"] == 5103 + 23
    with pytest.raises(DataError) as error:
        _run(tmp_path, leaky, "fail")
    assert str(error.value).startswith("viggo: 30 train and 0 validation rows repeat a row of their split")
    assert "data.overlap" in str(error.value) and not (tmp_path / "fail").exists()


@pytest.mark.parametrize("task", ["gsm8k", "sql"])
def test_the_real_splits_share_no_input_with_their_test_split(with_mirror, task):
    _, manifest = dataset.prepare(task, config.defaults())
    overlap = manifest["overlap"]
    assert overlap["test_overlap"]["train"]["input"]["normalized"] == 0 and overlap["dropped_total"] == 0


def test_a_truncated_mirror_file_stops_the_data_rule_with_one_sentence(mirror, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TUNEBENCH_DATA_MIRROR", raising=False)
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / "viggo", copy / "viggo")
    whole = (mirror / "viggo" / "train.csv").read_bytes()
    (copy / "viggo" / "train.csv").write_bytes(whole[: len(whole) // 2])  # cut mid-line
    config_file = tmp_path / "c.yaml"
    config_file.write_text(
        f"data: {{mirror: {copy}}}\nmodels: {{m: {{size: 1M, base: {{hub: x/y}}}}}}\nexperiments: {{}}\n"
    )
    out = tmp_path / "out"
    assert cli.main(["data", "viggo", "--config", str(config_file), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert f"{copy / 'viggo' / 'train.csv'} holds 2,5" in err and "not the expected 5,103 records" in err
    assert not out.exists()


def test_a_declared_tasks_files_are_recorded_on_first_use_and_checked_after(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = [json.dumps({"q": f"question {i}", "a": f"answer {i}"}) for i in range(40)]
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "c.yaml").write_text(
        "data: {max_bad_fraction: 0.05}\n"
        "tasks: {mine: {kind: custom, source: {jsonl: rows.jsonl}, input: q, target: a, scorer: exact}}\n"
        "models: {m: {size: 1M, base: {hub: x/y}}}\nexperiments: {}\n"
    )
    command = ["data", "mine", "--config", "c.yaml", "--out-dir", "out"]
    assert cli.main(command) == 0
    ledger = json.loads((tmp_path / "out" / "mine.sources.json").read_text())
    assert ledger["rows.jsonl"][0] == 40
    # The last line cut without its line break: counted as cut short, and refused against the record.
    (tmp_path / "rows.jsonl").write_text("\n".join(rows[:-1] + [rows[-1][:9]]))
    capsys.readouterr()
    assert cli.main(command) == 2
    err = capsys.readouterr().err.strip()
    assert "rows.jsonl holds 40 records" in err and "delete out/mine.sources.json" in err and "\n" not in err
    (tmp_path / "out" / "mine.sources.json").unlink()
    assert cli.main(command) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["bad_rows"]["rows.jsonl"] == {data.CUT_SHORT: 1}


def test_the_papers_data_table_shows_the_counts(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("TUNEBENCH_DATA_MIRROR", raising=False)
    leaky, _ = _leaky_mirror(mirror, tmp_path)
    _run(tmp_path, leaky, "drop")
    manifests = paper.read_manifests(tmp_path, ["drop"])
    text = paper.data_tex({"viggo": manifests["drop"]}, tasks.BUILT_IN)
    row = next(line for line in text.splitlines() if line.startswith("ViGGO &"))
    # Rows train / validation / test, malformed, repeats, inputs in test, dropped.
    assert row == r"ViGGO & 5,096 & 714 & 1,083 & 0 & 10 & 20 & 30 \\"
    assert "keeps those out of training" in text and "data.overlap is drop" in text
    with pytest.raises(UserError, match="run `tunebench data sql`"):
        paper.read_manifests(tmp_path, ["sql"])
