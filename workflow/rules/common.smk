# Helpers shared by the stage files: config validation, run tables and target lists.
import json
import sys

from snakemake.utils import validate

from tunebench import config as tb_config
from tunebench import tasks as tb_tasks
from tunebench.errors import ConfigError

# tunebench's validation fills the schema's defaults (also inside nullable objects, which
# Snakemake's default filling cannot enter), names a wrong key in one sentence and checks the
# rules a schema cannot state; Snakemake's validate then confirms the completed config.
try:
    tb_config.validate(config)
except ConfigError as error:
    sys.exit(f"tunebench: {error}")
validate(config, "../schemas/config.schema.yaml", set_default=False)

CONFIGFILES = " ".join(
    str(path) for path in (workflow.overwrite_configfiles or workflow.configfiles)
)
FINETUNE = tb_config.finetune_runs(config)
BASELINES = tb_config.baseline_runs(config)
DATA_TASKS = sorted(
    {run.task for run in FINETUNE}
    | {run.task for run in BASELINES}
    | {run.init_from[0] for run in FINETUNE if run.init_from}
)
EVALUATED = [run for run in FINETUNE if run.evaluate] + BASELINES


wildcard_constraints:
    task="|".join(tb_tasks.NAMES),
    model="[a-z0-9][a-z0-9._-]*",
    run="[a-z0-9_]+(-[a-z0-9_]+)?",
    split="train|validation|test",


def data_files(task):
    return expand("results/data/{task}/{split}.jsonl", task=task, split=("train", "validation", "test"))


def train_dir(run):
    return f"results/train/{run.task}/{run.model}/{run.run}"


def eval_dir(run):
    return f"results/eval/{run.task}/{run.model}/{run.run}"


def finetune_run(wildcards):
    return tb_config.find_finetune(config, wildcards.task, wildcards.model, wildcards.run)


def train_inputs(wildcards):
    """Data of the task, plus the first stage's checkpoint for a two-stage run."""
    run = finetune_run(wildcards)
    inputs = {"data": data_files(run.task)}
    if run.init_from:
        first_task, first_run = run.init_from
        inputs["init"] = f"results/train/{first_task}/{run.model}/{first_run}/best.json"
    return inputs


def train_resources(wildcards, attempt):
    run = finetune_run(wildcards)
    return tb_config.resources(config, "train", run.model, run.method)


def eval_inputs(wildcards):
    inputs = {"data": data_files(wildcards.task)}
    if not wildcards.run.startswith("baseline"):
        inputs["trained"] = f"results/train/{wildcards.task}/{wildcards.model}/{wildcards.run}/best.json"
    return inputs


def eval_resources(wildcards, attempt):
    return tb_config.resources(config, "evaluate", wildcards.model)


def metrics_files():
    return [f"{eval_dir(run)}/metrics.json" for run in EVALUATED]


def train_summaries():
    return [f"{train_dir(run)}/best.json" for run in FINETUNE]


def all_targets():
    return (
        expand("results/data/{task}/manifest.json", task=DATA_TASKS)
        + train_summaries()
        + metrics_files()
        + ["results/metrics.csv", "results/paper/tunebench.pdf"]
    )
