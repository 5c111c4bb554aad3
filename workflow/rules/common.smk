# Helpers shared by the stage files: config validation, run tables and target lists.
import json
from pathlib import Path
import sys

from snakemake.utils import validate

from tunebench import cluster as tb_cluster
from tunebench import config as tb_config
from tunebench import plan as tb_plan
from tunebench import tasks as tb_tasks
from tunebench.results import plan as results_plan
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


def check_fit():
    """Before any job is submitted: every GPU job must fit the hardware it declares (tunebench plan).
    CPU-only configs (the demo, the tests) skip it; their jobs share one machine's memory anyway.
    """
    gpu_jobs = [
        run
        for run in FINETUNE
        if tb_config.resources(config, "train", run.model, run.method)["gpu"]
    ]
    gpu_jobs += [
        run
        for run in EVALUATED
        if tb_config.resources(config, "evaluate", run.model)["gpu"]
    ]
    if not gpu_jobs:
        return
    refused = [fit.refusal() for fit in tb_plan.plan(config) if fit.problems]
    if refused:
        sys.exit("tunebench: " + " ".join(refused))


onstart:
    check_fit()


wildcard_constraints:
    task="|".join(tb_tasks.NAMES),
    model="[a-z0-9][a-z0-9._-]*",
    run="[a-z0-9_]+(-[a-z0-9_]+)?",
    split="train|validation|test",


def data_files(task):
    return expand(
        "results/data/{task}/{split}.jsonl",
        task=task,
        split=("train", "validation", "test"),
    )


def train_dir(run):
    return f"results/train/{run.task}/{run.model}/{run.run}"


def eval_dir(run):
    return f"results/eval/{run.task}/{run.model}/{run.run}"


def finetune_run(wildcards):
    return tb_config.find_finetune(
        config, wildcards.task, wildcards.model, wildcards.run
    )


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


def train_resource(name, unset):
    """A function giving one entry of the training job's row of resources.train (``unset`` if null)."""

    def value(wildcards):
        entry = train_resources(wildcards, 1).get(name)
        return unset if entry is None else entry

    value.__name__ = f"train_{name}"
    return value


def train_slurm(name):
    """A function giving one SLURM plugin resource of the training job (None leaves it unset)."""

    def value(wildcards):
        return tb_cluster.slurm_resources(train_resources(wildcards, 1))[name]

    value.__name__ = f"train_slurm_{name}"
    return value


def eval_inputs(wildcards):
    inputs = {"data": data_files(wildcards.task)}
    if not wildcards.run.startswith("baseline"):
        inputs["trained"] = (
            f"results/train/{wildcards.task}/{wildcards.model}/{wildcards.run}/best.json"
        )
    return inputs


def eval_resources(wildcards, attempt):
    return tb_config.resources(config, "evaluate", wildcards.model)


def eval_resource(name, unset):
    """A function giving one entry of the evaluation job's row of resources.evaluate (``unset`` if null)."""

    def value(wildcards):
        entry = eval_resources(wildcards, 1).get(name)
        return unset if entry is None else entry

    value.__name__ = f"eval_{name}"
    return value


def eval_slurm(name):
    """A function giving one SLURM plugin resource of the evaluation job (None leaves it unset)."""

    def value(wildcards):
        return tb_cluster.slurm_resources(eval_resources(wildcards, 1))[name]

    value.__name__ = f"eval_slurm_{name}"
    return value


def metrics_files():
    return [f"{eval_dir(run)}/metrics.json" for run in EVALUATED]


def train_summaries():
    return [f"{train_dir(run)}/best.json" for run in FINETUNE]


# Tables and figures this config produces, named before any run has finished.
RESULTS = results_plan(config)


def train_records():
    """Every training run's records, first stages of two-stage runs included."""
    return [
        f"{train_dir(run)}/{name}"
        for run in FINETUNE
        for name in ("run.json", "best.json", "history.jsonl")
    ]


def table_files():
    return expand(
        "results/tables/{name}.{ext}", name=RESULTS.tables, ext=("csv", "md", "tex")
    )


def figure_files():
    return expand(
        "results/figures/{name}.{ext}", name=RESULTS.figures, ext=("png", "pdf")
    )


def _caption(kind, name):
    """Caption file of a table or figure: one per kind (tasks share theirs)."""
    for prefix in ("ablation_format", "two_stage"):
        if name.startswith(prefix):
            return f"../report/{kind}_{prefix}.rst"
    if name in RESULTS.tasks or name.removesuffix("_accuracy") in RESULTS.tasks:
        return f"../report/{kind}_task.rst"
    return f"../report/{kind}_{name}.rst"


def report_tables():
    """Every table file; the CSV of each is shown in the Snakemake report."""
    files = []
    for name in RESULTS.tables:
        shown = report(
            f"results/tables/{name}.csv",
            caption=_caption("table", name),
            category="Tables",
            labels={"table": name.replace("_", " ")},
        )
        files.append(shown)
        files += [f"results/tables/{name}.md", f"results/tables/{name}.tex"]
    return files


def report_figures():
    """Every figure file; the PNG of each is shown in the Snakemake report."""
    files = []
    for name in RESULTS.figures:
        shown = report(
            f"results/figures/{name}.png",
            caption=_caption("figure", name),
            category="Figures",
            labels={"figure": name.replace("_", " ")},
        )
        files.append(shown)
        files.append(f"results/figures/{name}.pdf")
    return files


def paper_inputs():
    return {
        "tables": expand("results/tables/{name}.tex", name=RESULTS.tables),
        "figures": expand("results/figures/{name}.pdf", name=RESULTS.figures),
        "sources": sorted(
            str(path) for path in Path(workflow.basedir, "paper").glob("*.tex")
        ),
    }


def all_targets():
    return (
        expand("results/data/{task}/manifest.json", task=DATA_TASKS)
        + train_summaries()
        + metrics_files()
        + ["results/metrics.csv"]
        + table_files()
        + figure_files()
        + ["results/paper/tunebench.pdf"]
    )
