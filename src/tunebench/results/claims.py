"""The case studies' claims, decided on this configuration's runs with paired bootstrap intervals.

Each claim in ``resources/claims.yaml`` compares two kinds of run of the same model on the same test
rows. For every pair of evaluated runs it selects, the per-row verdicts of both ``predictions.jsonl``
files are joined by row id (rows either run could not score are left out), and the mean difference
gets a paired bootstrap interval. The label follows from the interval: *reproduced* when it lies
above zero, *contradicted* when below, *undecided* when it holds zero. A claim none of whose runs
this configuration makes is one row labelled *not run*, so a missing run never reads as a verdict.

A config's own ``comparisons`` are claims of the same form, decided the same way after the studies' ones;
their rows carry the source ``config`` (:data:`DECLARED`), and they may also select runs by ``model``
(a pair is of the same model unless either side names one).

A bootstrap over test rows says nothing of training variance. Where the ``better`` run was also
trained with more seeds (``experiments.finetune[].seeds``), each seed's run is compared with the same
``than`` run on the same rows, and the lowest and highest mean difference over all its seeds are
reported beside the interval; the label still comes from the interval of the primary run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from .. import config as tb_config
from .. import tasks as tb_tasks
from ..util import fileio, stats
from ..util.errors import DataError

LABELS = ("reproduced", "contradicted", "undecided", "not run")
COLUMNS = [
    "claim",
    "statement",
    "source",
    "published",
    "task",
    "metric",
    "model",
    "size",
    "better_run",
    "than_model",
    "than_run",
    "n",
    "better_value",
    "than_value",
    "difference",
    "ci_low",
    "ci_high",
    "label",
    "seeds",
    "seed_low",
    "seed_high",
]
SELECTOR_KEYS = ("stage", "method", "format", "variant", "model")
#: The ``source`` of a comparison the config declares, in results/claims.csv.
DECLARED = "config"


def load_claims() -> list[dict]:
    text = resources.files("tunebench").joinpath("resources/claims.yaml").read_text(encoding="utf-8")
    return [{"pair_on": [], **claim} for claim in yaml.safe_load(text)]  # as a config's comparisons are filled


def declared(config: Mapping) -> list[dict]:
    """The config's own comparisons, as claims."""
    return [{**comparison, "source": DECLARED, "published": ""} for comparison in config["comparisons"]]


def all_claims(config: Mapping) -> list[dict]:
    """The studies' claims, then the config's comparisons."""
    return load_claims() + declared(config)


def evaluated_runs(config: tb_config.Experiment) -> list[dict]:
    """Every evaluated run of the config with the attributes a claim selects on."""
    runs = [
        {
            "task": run.task,
            "model": run.model,
            "run": run.run,
            "stage": run.stage,
            "method": run.method,
            "format": run.format,
            "variant": None,
            "replicate_of": run.replicate_of,
        }
        for run in config.finetune
        if run.evaluate
    ]
    runs += [
        {
            "task": run.task,
            "model": run.model,
            "run": run.run,
            "stage": "baseline",
            "method": None,
            "format": None,
            "variant": run.variant,
            "replicate_of": None,
        }
        for run in config.baselines
    ]
    return runs


def _matches(run: Mapping, selector: Mapping) -> bool:
    return all(run[key] == selector[key] for key in SELECTOR_KEYS if selector.get(key) is not None)


def pairs(claim: Mapping, runs: list[dict], known: tb_tasks.TaskSet) -> list[tuple[dict, dict, str]]:
    """``(better, than, metric)`` for every pair of runs the claim compares, in config order (seed
    replicates are not paired themselves: they widen their primary run's row)."""
    found = []
    runs = [run for run in runs if not run["replicate_of"]]
    claim_tasks = known.scored() if claim["task"] == "any" else (claim["task"],)
    across_models = any(claim[side].get("model") for side in ("better", "than"))
    for task in claim_tasks:
        metric = known.get(task).primary_metric if claim["metric"] == "primary" else claim["metric"]
        of_task = [run for run in runs if run["task"] == task]
        for better in (run for run in of_task if _matches(run, claim["better"])):
            for than in of_task:
                if than is better or not _matches(than, claim["than"]):
                    continue
                if than["model"] != better["model"] and not across_models:
                    continue
                if all(than[key] == better[key] for key in claim["pair_on"]):
                    found.append((better, than, metric))
    return found


def verdicts(path: Path, metric: str) -> dict[str, float]:
    """Row id → the metric's verdict (as 0/1 or a number) for every row the scorer could judge."""
    if not path.is_file():
        raise DataError(f"{path} is missing; run the evaluation step for it first.")
    found = {}
    bad = f"is not a prediction record with a verdict for {metric}; delete the file and re-run its evaluation step."
    try:
        for number, record in fileio.iter_jsonl(path):
            try:
                value, row_id = record["verdict"][metric], record["id"]
            except (KeyError, TypeError):
                raise DataError(f"{path} line {number} {bad}") from None
            if value is not None:
                found[row_id] = float(value)
    except fileio.BadLine as line:
        raise DataError(f"{path} line {line.number} {bad}") from None
    return found


def label(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "undecided"
    if low > 0:
        return "reproduced"
    if high < 0:
        return "contradicted"
    return "undecided"


def decide(config: tb_config.Experiment, results: Path, claims: Iterable[Mapping] | None = None) -> pd.DataFrame:
    """One row per claim and pair of runs (or per claim not run), in the order of the claims file."""
    evaluation = config["evaluation"]
    runs = evaluated_runs(config)
    rows = []
    for claim in claims if claims is not None else all_claims(config):
        about = {key: claim[key] for key in ("statement", "source", "published")}
        compared = pairs(claim, runs, config.tasks)
        if not compared:
            rows.append({"claim": claim["id"], **about, "task": claim["task"], "label": "not run"})
            continue
        for better, than, metric in compared:
            task, model = better["task"], better["model"]
            scored = [verdicts(_predictions(results, run), metric) for run in (better, than)]
            shared = sorted(set(scored[0]) & set(scored[1]))
            a = [scored[0][row] for row in shared]
            b = [scored[1][row] for row in shared]
            difference, low, high = stats.paired_bootstrap(
                a, b, samples=evaluation["bootstrap_samples"], confidence=evaluation["confidence"], seed=config["seed"]
            )
            seed_runs = replicates(better, runs)
            over_seeds = [difference] + [
                _mean_difference(verdicts(_predictions(results, replicate), metric), scored[1])
                for replicate in seed_runs
            ]
            over_seeds = [value for value in over_seeds if value is not None]
            rows.append(
                {
                    "claim": claim["id"],
                    **about,
                    "task": task,
                    "metric": metric,
                    "model": model,
                    "size": config["models"][model]["size"],
                    "than_model": than["model"],
                    "better_run": better["run"],
                    "than_run": than["run"],
                    "n": len(shared),
                    "better_value": sum(a) / len(a) if a else None,
                    "than_value": sum(b) / len(b) if b else None,
                    "difference": difference,
                    "ci_low": low,
                    "ci_high": high,
                    "label": label(low, high),
                    "seeds": 1 + len(seed_runs),
                    "seed_low": min(over_seeds, default=None),
                    "seed_high": max(over_seeds, default=None),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def replicates(run: Mapping, runs: list[dict]) -> list[dict]:
    """The runs that repeat ``run`` with other training seeds."""
    return [
        other
        for other in runs
        if other["replicate_of"] == run["run"] and (other["task"], other["model"]) == (run["task"], run["model"])
    ]


def _predictions(results: Path, run: Mapping) -> Path:
    return results / "eval" / run["task"] / run["model"] / run["run"] / "predictions.jsonl"


def _mean_difference(better: Mapping[str, float], than: Mapping[str, float]) -> float | None:
    shared = sorted(set(better) & set(than))
    return sum(better[row] - than[row] for row in shared) / len(shared) if shared else None


def counts(claims: pd.DataFrame) -> dict[str, int]:
    """Rows per label, every label present (0 where none)."""
    found = claims["label"].value_counts()
    return {name: int(found.get(name, 0)) for name in LABELS}


def prediction_files(config: tb_config.Experiment) -> list[str]:
    """The predictions every claim of the config reads, relative to the workflow's directory."""
    runs = evaluated_runs(config)
    needed: set[tuple[str, str, str]] = set()
    for claim in all_claims(config):
        for better, than, _ in pairs(claim, runs, config.tasks):
            needed |= {(run["task"], run["model"], run["run"]) for run in (better, than, *replicates(better, runs))}
    return [f"results/eval/{task}/{model}/{run}/predictions.jsonl" for task, model, run in sorted(needed)]


def read(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} is missing; run `tunebench claims` (the workflow's claims rule) first.")
    frame = pd.read_csv(path)
    missing = [column for column in COLUMNS if column not in frame]
    if missing:
        raise DataError(f"{path} lacks the columns {', '.join(missing)}; delete it and run `tunebench claims` again.")
    return frame


def studies(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the studies' claims."""
    return frame[frame["source"] != DECLARED].reset_index(drop=True)


def comparisons(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the config's own comparisons."""
    return frame[frame["source"] == DECLARED].reset_index(drop=True)


def write(config: tb_config.Experiment, results: Path, out: Path) -> pd.DataFrame:
    frame = decide(config, Path(results))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_atomic(out, frame.to_csv(index=False))
    return frame
