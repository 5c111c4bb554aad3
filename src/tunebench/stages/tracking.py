"""Optional experiment trackers: copies of training histories and evaluation metrics for MLflow and TensorBoard.

Off unless the config's ``tracking`` section turns them on, and then only a copy of what the job writes anyway
(history.jsonl, metrics.json) goes out: nothing read back from a tracker reaches a prediction, metric or table.
Training logs through accelerate's own trackers (``Accelerator(log_with=...)``), evaluation through mlflow's
API and a TensorBoard writer; neither library is imported while tracking is off. What is sent is names, settings
and numbers of the config and the records; API keys live only in the environment and never reach a tracker.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

#: The history.jsonl fields of a step and of an epoch that go to the trackers, under these metric names.
STEP_METRICS = {"loss": "train/loss", "lr": "train/lr", "tokens_per_s": "train/tokens_per_s"}
EPOCH_METRICS = {
    "train_loss": "epoch/train_loss",
    "validation_loss": "epoch/validation_loss",
    "validation_perplexity": "epoch/validation_perplexity",
    "tokens_per_s": "epoch/tokens_per_s",
    "peak_memory_mb": "epoch/peak_memory_mb",
}
#: The metrics.json fields of an evaluation that go to the trackers beside each metric's value and interval.
EVAL_FIELDS = ("n", "unscorable", "prompt_tokens_mean", "generated_tokens_mean", "wall_time_s", "tokens_per_s")


@dataclass(frozen=True)
class Tracking:
    """The resolved ``tracking`` section: an MLflow tracking URI and a TensorBoard folder, each None when off."""

    mlflow_uri: str | None
    tensorboard_dir: Path | None
    experiment: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any], folder: Path | None = None) -> Tracking:
        """Paths relative to ``folder`` (the workflow's folder; default the current one) made absolute, since a
        training job's processes and MLflow's file store resolve them on their own."""
        section = config["tracking"]
        folder = Path.cwd() if folder is None else folder
        uri = None
        if section["mlflow"]:
            uri = section["mlflow_uri"]
            if not _is_uri(uri):
                uri = (folder / uri).resolve().as_uri()
        tensorboard = (folder / section["tensorboard_dir"]).resolve() if section["tensorboard"] else None
        return cls(mlflow_uri=uri, tensorboard_dir=tensorboard, experiment=section["experiment"])

    def keep_mlflow_out(self) -> None:
        """With MLflow off, make ``import mlflow`` fail in this job's process, as if it were not installed.

        DeepSpeed imports mlflow whenever it can (for its autotuner), and every training and evaluation job
        imports DeepSpeed through accelerate: on the shared two-core machine that doubled DeepSpeed's import
        (21-26 s against 10-12 s). A process that has loaded mlflow already keeps it.
        """
        if self.mlflow_uri is None and "mlflow" not in sys.modules:
            sys.modules["mlflow"] = None  # the documented way to make an import raise ModuleNotFoundError

    @property
    def enabled(self) -> bool:
        return self.mlflow_uri is not None or self.tensorboard_dir is not None

    def accelerate_trackers(self) -> list[str]:
        """accelerate's ``log_with`` names of the trackers that are on."""
        return [name for name, on in (("mlflow", self.mlflow_uri), ("tensorboard", self.tensorboard_dir)) if on]

    def start_training(self, accelerator, run_name: str, params: Mapping[str, Any]) -> None:
        """Open this training run in every tracker that is on (on the main process, as accelerate does);
        TensorBoard's events go to ``tensorboard_dir/run_name/experiment``."""
        if self.mlflow_uri:
            _use_mlflow(self.mlflow_uri)
        accelerator.init_trackers(
            self.experiment, config=flat_params(params), init_kwargs={"mlflow": {"run_name": run_name}}
        )

    def log_evaluation(self, metrics: Mapping[str, Any]) -> None:
        """One evaluation's metrics.json as a run of its own: each metric's value and interval, the counts and
        speed, and the run's names and settings digest as parameters."""
        run_name = f"eval/{metrics['task']}/{metrics['model']}/{metrics['run']}"
        params = {key: metrics[key] for key in ("task", "model", "run", "method", "stage", "settings_hash")}
        values = {f"eval/{key}": metrics[key] for key in EVAL_FIELDS if _is_number(metrics.get(key))}
        for name, metric in metrics["metrics"].items():
            for part in ("value", "ci_low", "ci_high"):
                if _is_number(metric.get(part)):
                    values[f"eval/{name}/{part}"] = metric[part]
        if self.mlflow_uri:
            mlflow = _use_mlflow(self.mlflow_uri)
            mlflow.set_experiment(self.experiment)
            with mlflow.start_run(run_name=run_name):
                mlflow.log_params(flat_params(params))
                mlflow.log_metrics(values)
        if self.tensorboard_dir:
            from tensorboardX import SummaryWriter

            with SummaryWriter(str(self.tensorboard_dir / run_name / self.experiment)) as writer:
                for key, value in values.items():
                    writer.add_scalar(key, value, 0)


def training_history_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """A history.jsonl record (a step or an epoch) under the trackers' metric names."""
    names = STEP_METRICS if record["kind"] == "step" else EPOCH_METRICS
    return {name: record[key] for key, name in names.items() if _is_number(record.get(key))}


def flat_params(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``a.b`` keys with scalar values (lists as text), which every tracker accepts."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = "none" if value is None else value
        else:
            flat[name] = str(value)
    return flat


def _is_uri(text: str) -> bool:
    return len(urlparse(text).scheme) > 1  # a one-letter scheme is a Windows drive, not a URI


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _use_mlflow(uri: str):
    import mlflow

    if uri.startswith("file:"):
        # MLflow 3 keeps its file store in maintenance and refuses it unless this is set; a file store needs no
        # server or database migration, and parallel jobs write to run folders of their own.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    return mlflow
