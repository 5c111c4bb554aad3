# Helpers shared by the stage files: config validation, run tables and target lists.
import json
from pathlib import Path
import shlex
import sys

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from tunebench.machinery import cluster as tb_cluster
from tunebench import config as tb_config
from tunebench.config import digests as tb_digests
from tunebench.machinery import fit as tb_fit
from tunebench.tasks import custom as tb_custom_tasks
from tunebench.results import claims as tb_claims
from tunebench.results import paper as tb_paper
from tunebench.results import plan as results_plan
from tunebench.util.errors import ConfigError

# tunebench validates against the schema file completed with the sections of the registered tasks and
# methods: it fills the defaults (also inside nullable objects, which Snakemake's default filling cannot
# enter), names a wrong key in one sentence and checks the rules a schema cannot state.
# The config files are read once more by tunebench's loader, which Snakemake's does not replace: it
# refuses duplicate keys (Snakemake's keeps the last silently) and names file and line of an error.
# Validation returns the experiment (runs, tasks, resources) that every helper below reads.
try:
    for _path in workflow.overwrite_configfiles or workflow.configfiles:
        tb_config.read_yaml(Path(_path))
    EXPERIMENT = tb_config.validate(config)
except ConfigError as error:
    sys.exit(f"tunebench: {error}")


# Each rule passes these paths to tunebench as a param, which Snakemake's params trigger compares. A file
# inside the working directory is written relative to it, so that naming it another way (absolute, or
# ./config/...) or moving the whole directory re-runs nothing; one outside it, absolute. What outputs
# depend on is each rule's settings digest (below), not a path.
def _config_path(path):
    path = Path(path).resolve()
    return (
        str(path.relative_to(Path.cwd()))
        if path.is_relative_to(Path.cwd())
        else str(path)
    )


CONFIGFILES = " ".join(
    _config_path(path)
    for path in (workflow.overwrite_configfiles or workflow.configfiles)
)


# How jobs call tunebench. On the host: through this very interpreter (the venv Snakemake runs from),
# so that jobs work without .venv/bin on PATH. The shell prefix defines `tunebench` as a shell function
# running `python -m tunebench`; a function rather than a param, because a param would be recorded in
# Snakemake's metadata and moving the venv would then re-run every job. In a container (--sdm
# apptainer) the host's interpreter path does not exist, so jobs call the image's own `tunebench`.
IN_CONTAINER = (
    DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
)
# A prefix replaces Snakemake's own, its bash strict mode (jobs run under bash, Snakemake's default
# shell), so it is repeated here. With hf_home set, rule fetch stages every hub model and dataset
# there before any data job, and every job then reads that cache offline.
SHELL_PREFIX = "set -euo pipefail; "
if not IN_CONTAINER:
    SHELL_PREFIX += (
        f'tunebench() {{{{ {shlex.quote(sys.executable)} -m tunebench "$@"; }}}}; '
    )
# A multi-node training job has no container (tunebench.machinery.cluster says why): its command runs on the host,
# where `tunebench_nodes NODES THREADS ARGS` starts one srun task per node, each running
# `<per-node command> ARGS`: the image through the profile's own apptainer settings, or this interpreter.
if IN_CONTAINER:
    NODE_COMMAND = (
        f'apptainer exec --home "$PWD" {workflow.deployment_settings.apptainer_args} '
        f'{shlex.quote(config["container"])} tunebench'
    )
else:
    NODE_COMMAND = f"{shlex.quote(sys.executable)} -m tunebench"
SHELL_PREFIX += (
    f"tunebench_nodes() {{{{ {shlex.quote(sys.executable)} -m tunebench.machinery.cluster "
    f'"$1" "$2" {shlex.quote(NODE_COMMAND)} "${{{{@:3}}}}"; }}}}; '
)
if config["hf_home"]:
    SHELL_PREFIX += (
        f"export HF_HOME={shlex.quote(config['hf_home'])} HF_HUB_OFFLINE=1; "
    )
shell.prefix(SHELL_PREFIX)


def train_settings_hash(wildcards):
    return tb_digests.train_hash(
        EXPERIMENT, wildcards.task, wildcards.model, wildcards.run
    )


def generate_settings_hash(wildcards):
    return tb_digests.generate_hash(
        EXPERIMENT, wildcards.task, wildcards.model, wildcards.run
    )


def score_settings_hash(wildcards):
    return tb_digests.score_hash(
        EXPERIMENT, wildcards.task, wildcards.model, wildcards.run
    )


def score_stamp(wildcards):
    return tb_digests.score_stamp(
        EXPERIMENT, wildcards.task, wildcards.model, wildcards.run
    )


FINETUNE = EXPERIMENT.finetune
BASELINES = EXPERIMENT.baselines
DATA_TASKS = sorted(
    {run.task for run in FINETUNE}
    | {run.task for run in BASELINES}
    | {run.init_from[0] for run in FINETUNE if run.init_from}
)
EVALUATED = EXPERIMENT.evaluated


# Settings stamps (workflow/rules/settings.smk): one per job, named after its digest, and an input of it.
# The same digest is also each rule's param (Snakemake's params trigger) and is recorded in the outputs.
RESULTS_STAMP = tb_digests.results_stamp(EXPERIMENT)
STAMP_COMMAND = (
    "rm -f $(dirname {output})/*.json $(dirname {log})/*.log;"
    " printf '%s\\n' {params.stamp:q} > {output};"
    " echo 'settings {wildcards.digest}; stamps of other settings removed' > {log}"
)


def stamp_text(settings):
    """A params function: the stamp's text, from ``settings(EXPERIMENT, *the job's wildcards)``, the digest last."""

    def text(wildcards):
        *job, name = wildcards
        return tb_digests.stamp_text(settings(EXPERIMENT, *job), name)

    text.__name__ = f"{settings.__name__}_stamp"
    return text


def check_fit():
    """Before any job is submitted: every GPU job must fit the hardware it declares (tunebench plan).
    CPU-only configs (the demo, the tests) skip it; their jobs share one machine's memory anyway.
    """
    gpu_jobs = [
        run
        for run in FINETUNE
        if EXPERIMENT.resources("train", run.model, run.method)["gpu"]
    ]
    gpu_jobs += [
        run for run in EVALUATED if EXPERIMENT.resources("evaluate", run.model)["gpu"]
    ]
    if not gpu_jobs:
        return
    refused = [fit.refusal() for fit in tb_fit.plan(EXPERIMENT) if fit.problems]
    if refused:
        sys.exit("tunebench: " + " ".join(refused))


onstart:
    check_fit()


wildcard_constraints:
    task="|".join(EXPERIMENT.tasks.names()),
    model="[a-z0-9][a-z0-9._-]*",
    run="[a-z0-9_]+(-[a-z0-9_]+)?",
    split="train|validation|test",
    digest="[0-9a-f]{16}",


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
    return EXPERIMENT.run(
        wildcards.task, wildcards.model, wildcards.run, finetuned=True
    )


def train_inputs(wildcards):
    """Data of the task, plus the first stage's checkpoint for a two-stage run."""
    run = finetune_run(wildcards)
    inputs = {
        "data": data_files(run.task),
        "settings": tb_digests.train_stamp(EXPERIMENT, run.task, run.model, run.run),
    }
    if run.init_from:
        first_task, first_run = run.init_from
        inputs["init"] = f"results/train/{first_task}/{run.model}/{first_run}/best.json"
    return inputs


def job_rows(kind, wildcards):
    """The job's row of resources.train (per method) or resources.evaluate."""
    method = finetune_run(wildcards).method if kind == "train" else None
    return EXPERIMENT.resources(kind, wildcards.model, method, wildcards.task)


def job_resource(kind, name, unset):
    """A function giving one entry of the job's row of resources (``unset`` if null)."""

    def value(wildcards):
        entry = job_rows(kind, wildcards).get(name)
        return unset if entry is None else entry

    value.__name__ = f"{kind}_{name}"
    return value


def train_container(wildcards):
    """The image of a training job under --sdm apptainer; none for a multi-node job, whose command starts
    the image on every node itself (tunebench.machinery.cluster)."""
    return None if job_rows("train", wildcards)["nodes"] > 1 else config["container"]


def train_launcher(wildcards):
    """How the training job calls tunebench: directly, or once per node of a multi-node job."""
    rows = job_rows("train", wildcards)
    if rows["nodes"] == 1:
        return "tunebench"
    return f"tunebench_nodes {rows['nodes']} {rows['threads']}"


def job_slurm(kind, name):
    """A function giving one SLURM plugin resource of the job (None leaves it unset)."""

    def value(wildcards):
        return tb_cluster.slurm_resources(job_rows(kind, wildcards))[name]

    value.__name__ = f"{kind}_slurm_{name}"
    return value


def generate_inputs(wildcards):
    inputs = {
        "data": data_files(wildcards.task),
        "settings": tb_digests.generate_stamp(
            EXPERIMENT, wildcards.task, wildcards.model, wildcards.run
        ),
    }
    if not tb_config.is_baseline(wildcards.run):
        inputs["trained"] = (
            f"results/train/{wildcards.task}/{wildcards.model}/{wildcards.run}/best.json"
        )
    return inputs


def metrics_files():
    return [f"{eval_dir(run)}/metrics.json" for run in EVALUATED]


def train_summaries():
    return [f"{train_dir(run)}/best.json" for run in FINETUNE]


# Tables and figures this config produces (tunebench.results.Output entries), known before any run has finished.
RESULTS = results_plan(EXPERIMENT)


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


def report_tables():
    """Every table file; the CSV of each is shown in the Snakemake report."""
    files = []
    for output in RESULTS.of("table"):
        shown = report(
            f"results/tables/{output.name}.csv",
            caption=output.report_caption,
            category=output.category,
            labels={"table": output.label},
        )
        files.append(shown)
        files += [
            f"results/tables/{output.name}.md",
            f"results/tables/{output.name}.tex",
        ]
    return files


def report_figures():
    """Every figure file; the PNG of each is shown in the Snakemake report."""
    files = []
    for output in RESULTS.of("figure"):
        shown = report(
            f"results/figures/{output.name}.png",
            caption=output.report_caption,
            category=output.category,
            labels={"figure": output.label},
        )
        files.append(shown)
        files.append(f"results/figures/{output.name}.pdf")
    return files


def claims_predictions():
    """The predictions every claim of the studies compares (see tunebench.results.claims)."""
    return tb_claims.prediction_files(EXPERIMENT)


def claims_input(wildcards):
    """results/claims.csv for the steps that show the claims or the config's comparisons, when it has any."""
    return (
        {"claims": "results/claims.csv"}
        if RESULTS.drawing("table", "claims") or RESULTS.drawing("table", "comparisons")
        else {}
    )


def paper_inputs():
    return {
        "tables": expand("results/tables/{name}.tex", name=RESULTS.tables),
        "figures": expand("results/figures/{name}.pdf", name=RESULTS.figures),
        "sources": sorted(
            str(path) for path in Path(workflow.basedir, "paper").glob("*.tex")
        ),
    }


def paper_buildable():
    """The PDF needs TeX where the paper job runs: on this machine, or in the suite's container.

    Without it the default target leaves the paper out, so every other output and the report are
    still built and the run succeeds; `tunebench summary` says how to get the PDF.
    """
    if DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method:
        return True
    missing = tb_paper.tex_missing()
    if missing:
        print(
            f"tunebench: {tb_paper.how_to_get_tex(missing)}; this run builds everything but the paper PDF.",
            file=sys.stderr,
        )
    return not missing


def settings_stamps():
    """Every job's stamp. The default target names them: without Snakemake's metadata (a results/ copied
    alone), a missing stamp re-runs its job only where something asks for the stamp itself.
    """
    return (
        [tb_digests.data_stamp(EXPERIMENT, task) for task in DATA_TASKS]
        + [
            tb_digests.train_stamp(EXPERIMENT, run.task, run.model, run.run)
            for run in FINETUNE
        ]
        + [
            stamp(EXPERIMENT, run.task, run.model, run.run)
            for run in EVALUATED
            for stamp in (tb_digests.generate_stamp, tb_digests.score_stamp)
        ]
        + [RESULTS_STAMP]
    )


def all_targets():
    return (
        settings_stamps()
        + expand("results/data/{task}/manifest.json", task=DATA_TASKS)
        + train_summaries()
        + metrics_files()
        + ["results/metrics.csv"]
        + table_files()
        + figure_files()
        + (["results/paper/tunebench.pdf"] if paper_buildable() else [])
    )


def staged_hub(wildcards):
    """The fetch rule's stamp when hub items are staged for offline jobs (nothing otherwise)."""
    return ["results/staging/fetched"] if config["hf_home"] else []
