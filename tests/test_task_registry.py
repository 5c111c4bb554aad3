"""A built-in task is one module: it registers itself where it is defined, its metrics come from its
scorer, its config section sits beside it. The synthetic task here (task and scorer in this one file)
is all a new task needs besides the config that names it."""

from __future__ import annotations

import pytest

from tunebench import config as tb_config
from tunebench import tasks
from tunebench.results import labels
from tunebench.stages import dataset
from tunebench.tasks import Prepared, Task
from tunebench.util.errors import ConfigError

# The scorer: this module itself (METRICS, extract, score), named by the task's ``scorer``.
METRICS = ("echoed", "same_length")


def extract(prediction: str) -> str | None:
    return prediction.strip() or None


def score(prediction: str, gold, **options) -> dict[str, bool | None]:
    said = extract(prediction)
    if said is None:
        return dict.fromkeys(METRICS)
    return {"echoed": said == gold["answer"], "same_length": len(said) == len(gold["answer"])}


class Echo(Task):
    name = "echo"
    label = "Echo"
    order = 99
    scorer = __name__
    primary_metric = "echoed"
    schema = {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "description": "Words the model repeats.",
        "properties": {
            "limit": {"$ref": "#/$defs/limit"},
            "rows": {"type": "integer", "minimum": 3, "default": 12, "description": "Rows generated."},
        },
    }

    def prepare(self, options, mirror, seed: int) -> Prepared:
        rows = [
            {"id": f"echo-{i:03d}", "prompt": f"say w{i}", "completion": f"w{i}", "answer": f"w{i}"}
            for i in range(options["rows"])
        ]
        third = len(rows) // 3
        splits = {"test": rows[:third], "validation": rows[third : 2 * third], "train": rows[2 * third :]}
        return Prepared(splits=splits, source={"generator": "echo", "rows": options["rows"]})

    def baseline_messages(self, row, train, variant, options):
        return [{"role": "user", "content": row["prompt"]}]


@pytest.fixture
def echo():
    task = tasks.register(Echo())
    yield task
    tasks._BUILT_IN.pop(task.name)


def _config(task_section: dict) -> dict:
    return tb_config.validate(
        {
            "models": {"tiny": {"size": "tiny", "base": {"hub": "org/tiny"}}},
            "tasks": {"echo": task_section},
            "experiments": {
                "finetune": [{"task": "echo", "models": ["tiny"], "methods": ["lora"]}],
                "baselines": [{"task": "echo", "models": ["tiny"]}],
            },
        }
    )


def test_the_built_in_tasks_are_found_from_their_modules_in_the_suites_order():
    assert tasks.built_in() == ("viggo", "sql", "gsm8k", "mathqa", "multiplication")
    scored = [name for name in tasks.scored() if name in tasks.built_in()]  # a validated config may add its own
    assert scored == ["viggo", "sql", "gsm8k", "multiplication"]  # mathqa has no scorer
    for name in scored:
        task = tasks.get(name)
        assert task.metrics == tuple(task.scorer_module().METRICS) and task.primary_metric in task.metrics


def test_a_task_defined_in_one_module_is_configured_prepared_scored_and_labelled(echo):
    config = _config({"limit": {"train": 3}})
    assert config["tasks"]["echo"]["rows"] == 12 and config["tasks"]["echo"]["limit"]["train"] == 3  # defaults filled
    assert tasks.built_in()[-1] == "echo" and "echo" in tasks.scored()
    assert echo.metrics == METRICS and labels.task("echo", tasks.BUILT_IN) == "Echo"
    assert echo.score(" w1 ", {"answer": "w1"}) == {"echoed": True, "same_length": True}
    assert echo.score("w22", {"answer": "w1"}) == {"echoed": False, "same_length": False}
    assert echo.score("  ", {"answer": "w1"}) == {"echoed": None, "same_length": None}
    prepared, manifest = dataset.prepare("echo", config)
    assert [len(prepared.splits[split]) for split in ("train", "validation", "test")] == [3, 4, 4]
    assert [run.run for run in config.finetune] == ["lora"]


def test_a_tasks_own_section_is_checked_by_the_schema(echo):
    with pytest.raises(ConfigError, match=r"tasks\.echo\.rows is 1 but must be at least 3"):
        _config({"rows": 1})
    with pytest.raises(ConfigError, match="unknown key colour under tasks.echo"):
        _config({"colour": "red"})


def test_without_its_module_the_task_is_unknown():
    with pytest.raises(ConfigError, match="tasks.echo"):
        _config({})
