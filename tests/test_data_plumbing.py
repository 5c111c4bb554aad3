"""Data-stage plumbing: bad rows counted or refused, source errors, limits, manifest, export."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys

import pytest

from tunebench import config
from tunebench.commands import cli
from tunebench.stages import dataset, formats
from tunebench.tasks import data
from tunebench.util.errors import DataError

GOOD_MR = "inform(name[Tetris], rating[good])"


def _config(mirror, max_bad=0.01, **tasks):
    cfg = config.defaults()
    cfg["data"].update(mirror=str(mirror), max_bad_fraction=max_bad, verify_sources=False)  # mirrors made here
    for name, options in tasks.items():
        cfg["tasks"][name].update(options)
    return cfg


def _viggo_mirror(root, train_rows, extra_lines=()):
    folder = root / "viggo"
    folder.mkdir(parents=True)
    for name, rows in (
        ("train.csv", train_rows),
        ("valid.csv", [(GOOD_MR, "Tetris is good.")]),
        ("test.csv", [(GOOD_MR, "Tetris is rated good.")]),
    ):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["mr", "ref"])
            writer.writerows(rows)
            for line in extra_lines if name == "train.csv" else ():
                handle.write(line + "\n")
    return root


def test_bad_rows_are_dropped_and_counted_by_reason(tmp_path, monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    good = [(GOOD_MR, f"Tetris is good, says reviewer {i}.") for i in range(96)]
    bad = [(GOOD_MR, "   "), ("not a meaning representation", "Some sentence."), ("shout(name[X])", "X!")]
    mirror = _viggo_mirror(tmp_path, good + bad, extra_lines=['"inform(name[A])","a sentence","an extra field"'])
    prepared, manifest = dataset.prepare("viggo", _config(mirror, max_bad=0.05))
    assert manifest["rows"]["train"] == 96
    assert manifest["bad_rows"]["viggo/train.csv"] == {
        "empty sentence": 1,
        "meaning representation has an unknown function": 1,
        "meaning representation is not function(attributes)": 1,
        "row has 3 fields, the header 2": 1,
    }
    assert manifest["bad_rows_total"] == 4
    assert manifest["source"]["rows_read"]["viggo/train.csv"] == 100


def test_too_many_bad_rows_stop_the_stage_with_one_sentence(tmp_path, monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    rows = [(GOOD_MR, f"Tetris {i}.") for i in range(90)] + [("", f"empty {i}") for i in range(10)]
    mirror = _viggo_mirror(tmp_path, rows)
    with pytest.raises(DataError) as error:
        dataset.prepare("viggo", _config(mirror, max_bad=0.05))
    message = str(error.value)
    assert "10 of 100 records of viggo/train.csv" in message and "data.max_bad_fraction = 0.05" in message
    assert "empty meaning representation" in message and message.count(". ") == 0 and "\n" not in message
    # At the CLI: exit status 2 and the sentence on stderr, nothing written.
    out = tmp_path / "out"
    config_file = tmp_path / "c.yaml"
    config_file.write_text(
        f"data: {{mirror: {mirror}, max_bad_fraction: 0.05, verify_sources: false}}\n"
        "models: {m: {size: 1M, base: {hub: x/y}}}\nexperiments: {}\n"
    )
    assert cli.main(["data", "viggo", "--config", str(config_file), "--out-dir", str(out)]) == 2
    assert not (out / "train.jsonl").exists()


def test_unparsable_json_lines_are_counted(tmp_path, monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    good = [
        json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}) for i in range(200)
    ]
    (folder / "train.jsonl").write_text(
        "\n".join(good + ["{not json", '{"question": "q", "answer": "no final line"}']) + "\n"
    )
    test = [json.dumps({"question": f"What is {i} + 2?", "answer": f"#### {i + 2}"}) for i in range(10)]
    (folder / "test.jsonl").write_text("\n".join(test) + "\n")
    prepared, manifest = dataset.prepare("gsm8k", _config(tmp_path, gsm8k={"validation_rows": 20}))
    assert manifest["bad_rows"]["gsm8k/train.jsonl"] == {
        "line is not valid JSON": 1,
        "solution does not end with #### <number>": 1,
    }
    assert manifest["rows"] == {"train": 180, "validation": 20, "test": 10}


def test_missing_mirror_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    (tmp_path / "viggo").mkdir()
    with pytest.raises(DataError, match=r"has no viggo/train\.csv"):
        dataset.prepare("viggo", _config(tmp_path))


def test_mirror_that_is_not_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(config.MIRROR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(config.ConfigError, match="TUNEBENCH_DATA_MIRROR"):
        dataset.prepare("viggo", config.defaults())


def test_no_mirror_and_no_hub_names_both_ways(tmp_path):
    # A separate process: the hub client reads its offline switch when first imported.
    env = {k: v for k, v in os.environ.items() if k != config.MIRROR_ENV}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    code = (
        "from tunebench import config\nfrom tunebench.tasks import data\nfrom tunebench.stages import dataset\n"
        "try:\n    dataset.prepare('viggo', config.defaults())\n"
        "except data.DataUnavailable as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    message = result.stdout.strip()
    assert "GEM/viggo" in message and "data.mirror" in message and config.MIRROR_ENV in message, result.stderr[-2000:]
    assert "\n" not in message


def test_limits_are_seeded_subsets_in_source_order():
    rows = [{"id": f"r{i}"} for i in range(100)]
    picked = data.limit_rows(rows, 10, 42, "t", "train")
    assert picked == data.limit_rows(rows, 10, 42, "t", "train")
    assert picked != data.limit_rows(rows, 10, 43, "t", "train")
    assert [int(r["id"][1:]) for r in picked] == sorted(int(r["id"][1:]) for r in picked)
    assert data.limit_rows(rows, None, 42) == rows and data.limit_rows(rows, 500, 42) == rows


def test_rows_are_written_with_a_fixed_key_order(tmp_path):
    path = tmp_path / "x.jsonl"
    data.write_rows(path, [{"b": 1, "answer": "4", "id": "x", "a": 2, "completion": "c", "prompt": "p"}])
    assert path.read_text() == '{"id": "x", "prompt": "p", "completion": "c", "answer": "4", "a": 2, "b": 1}\n'
    with pytest.raises(DataError, match="lacks prompt"):
        (tmp_path / "bad.jsonl").write_text('{"id": "x", "completion": "c", "answer": "a"}\n')
        data.read_rows(tmp_path / "bad.jsonl")


def test_manifest_lists_source_filters_and_hashes(tmp_path, with_mirror):
    out = tmp_path / "sql"
    assert cli.main(["data", "sql", "--out-dir", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["task"] == "sql" and manifest["seed"] == 42
    assert manifest["source"]["kind"] == "mirror"
    assert manifest["source"]["files"]["sql-create-context/sample.jsonl"]["sha256"] == (
        "95f5c0bffa10cbb5ccbf8b5e06c28d382b772823700f671d3d044a1aaa084029"
    )
    assert {f["name"] for f in manifest["filters"]} == {"duplicate", "varchar_numeric"}
    assert manifest["options"]["drop_varchar_numeric"] is True
    for split in data.SPLITS:
        body = (out / f"{split}.jsonl").read_bytes()
        assert len(body.splitlines()) == manifest["rows"][split]
        assert hashlib.sha256(body).hexdigest() == manifest["format"]["sha256"][split]


def test_export_to_openai_prompt_completion(tmp_path, with_mirror, capsys):
    out = tmp_path / "mult"
    assert cli.main(["data", "multiplication", "--rows", "200", "--out-dir", str(out)]) == 0
    exported = tmp_path / "openai.jsonl"
    assert (
        cli.main(["export", str(out / "validation.jsonl"), "--format", "special_tokens", "--out", str(exported)]) == 0
    )
    rows = data.read_rows(out / "validation.jsonl")
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == len(rows) == 10
    for row, line in zip(rows, lines):
        assert list(line) == ["prompt", "completion"]
        assert formats.parse("special_tokens", line["prompt"] + line["completion"], "multiplication") == (
            row["prompt"],
            row["completion"],
        )
    # The instruction and chat formats need a tokenizer: the command says how to give one.
    assert cli.main(["export", str(out / "test.jsonl"), "--format", "chat", "--out", str(exported)]) == 2
    assert "--config FILE and --model NAME" in capsys.readouterr().err
    # Without a manifest beside the split the task must be named.
    lone = tmp_path / "lone.jsonl"
    lone.write_bytes((out / "test.jsonl").read_bytes())
    assert cli.main(["export", str(lone), "--out", str(exported)]) == 2
    assert cli.main(["export", str(lone), "--task", "multiplication", "--out", str(exported)]) == 0


def test_hub_path_reads_gem_column_names(tmp_path):
    """The hub branch, run on a local dataset directory laid out like GEM/viggo (its column names)."""
    hub = tmp_path / "gem_viggo"
    hub.mkdir()
    for split in data.SPLITS:
        with open(hub / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["gem_id", "meaning_representation", "target", "references"])
            for i in range(3):
                writer.writerow([f"viggo-{split}-{i}", GOOD_MR, f"Tetris is good ({split} {i}).", "[]"])
    env = {k: v for k, v in os.environ.items() if k != config.MIRROR_ENV}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    code = (
        "import json, sys\nfrom tunebench import config\nfrom tunebench.stages import dataset\n"
        "cfg = config.defaults()\ncfg['tasks']['viggo']['hub']['id'] = sys.argv[1]\n"
        "prepared, manifest = dataset.prepare('viggo', cfg)\n"
        "print(json.dumps({'manifest': manifest, 'first': prepared.splits['test'][0]}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(hub)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["manifest"]["rows"] == {"train": 3, "validation": 3, "test": 3}
    assert out["manifest"]["source"]["kind"] == "hub" and out["manifest"]["source"]["splits"] == {
        s: 3 for s in data.SPLITS
    }
    assert out["first"]["prompt"] == "Tetris is good (test 0)." and out["first"]["answer"] == GOOD_MR


def _viggo_good(n=100):
    return [(GOOD_MR, f"Tetris is good, says reviewer {i}.") for i in range(n)]


def test_a_header_only_csv_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    mirror = _viggo_mirror(tmp_path, [])
    with pytest.raises(DataError) as error:
        dataset.prepare("viggo", _config(mirror))
    message = str(error.value)
    assert "viggo: the train split has no usable rows" in message and "viggo/train.csv (0 records)" in message
    assert "\n" not in message


def test_an_empty_gsm8k_test_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    good = [json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) for i in range(50)]
    (folder / "train.jsonl").write_text("\n".join(good) + "\n")
    (folder / "test.jsonl").write_text("")
    with pytest.raises(DataError, match=r"gsm8k: the test split has no usable rows .*gsm8k/test\.jsonl \(0 records\)"):
        dataset.prepare("gsm8k", _config(tmp_path, gsm8k={"validation_rows": 5}))


def test_a_csv_cut_inside_a_quote_at_the_end_keeps_no_truncated_row(tmp_path, monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    mirror = _viggo_mirror(tmp_path, _viggo_good(), extra_lines=['"inform(name[Tetris], rating[go'])
    prepared, manifest = dataset.prepare("viggo", _config(mirror))
    assert manifest["rows"]["train"] == 100
    assert manifest["bad_rows"]["viggo/train.csv"] == {"row has an unclosed or misplaced quote": 1}
    assert all(row["answer"] == GOOD_MR for row in prepared.splits["train"])


def test_an_unclosed_quote_mid_file_never_merges_two_rows(tmp_path, monkeypatch):
    """The broken line is one bad row; the good row after it survives on its own."""
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    folder = tmp_path / "viggo"
    folder.mkdir()
    lines = ["mr,ref"] + [f'"{GOOD_MR}",Tetris is good {i}.' for i in range(50)]
    lines += [f'"{GOOD_MR}","A sentence cut short', f'"{GOOD_MR}",The next good row.']
    lines += [f'"{GOOD_MR}",Tetris is fine {i}.' for i in range(50)]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    for name in ("valid.csv", "test.csv"):
        (folder / name).write_text(f'mr,ref\n"{GOOD_MR}",Tetris.\n')
    prepared, manifest = dataset.prepare("viggo", _config(tmp_path))
    prompts = [row["prompt"] for row in prepared.splits["train"]]
    assert "The next good row." in prompts and len(prompts) == 101
    assert all("\n" not in prompt and "cut short" not in prompt for prompt in prompts)
    assert manifest["bad_rows"]["viggo/train.csv"] == {"row has an unclosed or misplaced quote": 1}


def test_nul_bytes_are_bad_rows(tmp_path, monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    mirror = _viggo_mirror(tmp_path, _viggo_good() + [(GOOD_MR, "Tetris\x00 is good.")])
    prepared, manifest = dataset.prepare("viggo", _config(mirror))
    assert manifest["bad_rows"]["viggo/train.csv"] == {"row contains a NUL byte": 1}
    assert not any("\x00" in row["prompt"] for row in prepared.splits["train"])
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    good = [json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) for i in range(50)]
    escaped = json.dumps({"question": "What is\u0000 1 + 1?", "answer": "#### 2"})  # NUL as a JSON escape
    (folder / "train.jsonl").write_text("\n".join(good + [escaped, '{"question": "a\x00", "answer": "#### 1"}']) + "\n")
    (folder / "test.jsonl").write_text("\n".join(good[:5]) + "\n")
    prepared, manifest = dataset.prepare("gsm8k", _config(tmp_path, max_bad=0.05, gsm8k={"validation_rows": 5}))
    assert manifest["bad_rows"]["gsm8k/train.jsonl"] == {
        "line contains a NUL byte": 1,
        "question contains a NUL byte": 1,
    }
    assert not any("\x00" in row["prompt"] for rows in prepared.splits.values() for row in rows)


def test_a_byte_order_mark_is_read_correctly(tmp_path, monkeypatch):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    mirror = _viggo_mirror(tmp_path, _viggo_good())
    for name in ("train.csv", "valid.csv", "test.csv"):
        path = mirror / "viggo" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    prepared, manifest = dataset.prepare("viggo", _config(mirror))
    assert manifest["rows"]["train"] == 100 and manifest["bad_rows_total"] == 0
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    good = [json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) for i in range(50)]
    (folder / "train.jsonl").write_text("\ufeff" + "\n".join(good) + "\n", encoding="utf-8")
    (folder / "test.jsonl").write_text("\ufeff" + "\n".join(good[:5]) + "\n", encoding="utf-8")
    _, manifest = dataset.prepare("gsm8k", _config(tmp_path, gsm8k={"validation_rows": 5}))
    assert manifest["bad_rows_total"] == 0 and manifest["rows"]["test"] == 5


def test_an_integer_over_the_digit_limit_is_a_bad_row(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(config.MIRROR_ENV, raising=False)
    folder = tmp_path / "gsm8k"
    folder.mkdir()
    good = [json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) for i in range(200)]
    huge = '{"question": "How big?", "answer": "#### 1", "id": ' + "9" * 5000 + "}"
    (folder / "train.jsonl").write_text("\n".join(good + [huge]) + "\n")
    (folder / "test.jsonl").write_text("\n".join(good[:5]) + "\n")
    _, manifest = dataset.prepare("gsm8k", _config(tmp_path, gsm8k={"validation_rows": 5}))
    assert manifest["bad_rows"]["gsm8k/train.jsonl"] == {"line holds a number too long to read": 1}
    # Too many of them: one sentence from the CLI, exit status 2, no traceback.
    (folder / "train.jsonl").write_text("\n".join(good[:20] + [huge] * 5) + "\n")
    config_file = tmp_path / "c.yaml"
    config_file.write_text(
        f"data: {{mirror: {tmp_path}, verify_sources: false}}\ntasks: {{gsm8k: {{validation_rows: 5}}}}\n"
        "models: {m: {size: 1M, base: {hub: x/y}}}\nexperiments: {}\n"
    )
    assert cli.main(["data", "gsm8k", "--config", str(config_file), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "number too long to read" in err and "\n" not in err


def test_two_data_runs_into_one_directory_do_not_collide(tmp_path, with_mirror):
    """Each write goes through its own temporary name; both processes finish and leave no temporary file."""
    demo = config.ROOT / "config" / "demo.yaml"
    command = [sys.executable, "-m", "tunebench", "data", "viggo", "--config", str(demo), "--out-dir", str(tmp_path)]
    # A writer still busy with the name a fixed-name scheme would use: it must be left alone.
    busy = tmp_path / "train.jsonl.tmp"
    busy.write_text("another writer's half-written file")
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    assert busy.read_text() == "another writer's half-written file"
    busy.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"]["sha256"]["train"] == hashlib.sha256((tmp_path / "train.jsonl").read_bytes()).hexdigest()


def test_a_prepared_split_with_an_over_long_integer_is_named(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "completion": "c", "answer": ' + "3" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"test\.jsonl line 1 is not valid JSON or holds a number too long to read"):
        data.read_rows(path)
