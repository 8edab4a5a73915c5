"""The one module that talks to MLflow. The training loop only sees a callback."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from data_utils import normalize
from experiments import plots
from experiments.config import Config, to_dict, to_yaml

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
# Inferring requirements costs 4-9 s per log_model call; these are what loading the model needs.
MODEL_REQUIREMENTS = ["torch==2.14.1", "mlflow==3.17.2"]


class TrackingError(RuntimeError):
    """A run or storage that cannot be used; the message says which and why."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def client() -> MlflowClient:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def _artifact_root(uri: str) -> str | None:
    """Local stores keep artifacts beside the database; servers choose their own."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    return (db.parent.resolve() / "artifacts").as_uri()


def experiment_id(name: str) -> str:
    """Get or create the experiment, tolerating a worker that creates it at the same moment."""
    c = client()
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = _artifact_root(tracking_uri())
    try:
        return c.create_experiment(name, artifact_location=root and f"{root}/{name}")
    except MlflowException:
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def get_run(run_id: str) -> mlflow.entities.Run:
    try:
        return client().get_run(run_id)
    except MlflowException:
        raise TrackingError(
            f"no MLflow run with id {run_id!r} in {tracking_uri()}; "
            "list runs with `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`"
        ) from None


def download_checkpoint(run_id: str, name: str = "last.pt") -> Path:
    """Fetch checkpoints/<name> of a run into a temp folder; works for local and server stores."""
    get_run(run_id)
    dst = tempfile.mkdtemp(prefix="fashion-lab-resume-")
    try:
        path = client().download_artifacts(run_id, f"checkpoints/{name}", dst)
    except (MlflowException, OSError):
        raise TrackingError(
            f"run {run_id} has no checkpoints/{name}: it never finished an epoch, "
            "or ran with --no-checkpoint; start a new run instead"
        ) from None
    return Path(path)


def run_name(cfg: Config) -> str:
    return cfg.run_name or f"{cfg.model}-{cfg.optimizer}-lr{cfg.lr:.0e}-bs{cfg.batch_size}"


class MlflowCallback:
    """Logs one training run under DESIGN.md's tracking contract.

    New run: created at train start (after config and data are checked). Resume: attaches to
    run_id and skips every (metric, step) already recorded, so each epoch's metrics land once.
    """

    def __init__(
        self,
        cfg: Config,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        log_model: bool = True,
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.log_model = log_model
        self.client = client()
        self._logged: set[tuple[str, int]] = set()

    def on_start(self, dataset_md5: str, extra_params: Mapping[str, Any]) -> None:
        if self.run_id is None:
            tags = {
                "git_commit": git_commit(),
                "dataset_md5": dataset_md5,
                "mlflow.runName": run_name(self.cfg),
                **self.tags,
            }
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run = self.client.create_run(experiment_id(self.cfg.experiment_name), tags=tags)
            self.run_id = run.info.run_id
            params = {**to_dict(self.cfg), **extra_params}
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
            self.client.log_text(self.run_id, to_yaml(self.cfg), "config.yaml")
        else:
            self.client.update_run(self.run_id, status="RUNNING")
            self._logged = {
                (m.key, m.step)
                for key in self.client.get_run(self.run_id).data.metrics
                for m in self.client.get_metric_history(self.run_id, key)
            }
        # Printed at once, so whoever kills this process knows what to --resume.
        print(f"mlflow_run_id: {self.run_id}", flush=True)

    def log_metrics(self, points: Iterable[tuple[str, float, int]]) -> None:
        """One batched call for many (key, value, step) points; skips repeats after a resume."""
        now = int(time.time() * 1000)
        fresh = [Metric(k, float(v), now, s) for k, v, s in points if (k, s) not in self._logged]
        for i in range(0, len(fresh), 1000):  # MLflow's per-call limit
            self.client.log_batch(self.run_id, metrics=fresh[i : i + 1000])
        self._logged.update((m.key, m.step) for m in fresh)

    def on_epoch_end(
        self, epoch: int, metrics: Mapping[str, float], train_losses: Iterable[tuple[int, float]]
    ) -> None:
        points = [("train_loss", v, s) for s, v in train_losses]
        points += [(k, v, epoch) for k, v in metrics.items()]
        self.log_metrics(points)

    def on_checkpoint(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path), "checkpoints")

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def on_end(self, result: Any) -> None:
        """result is train.TrainResult: final metrics, plots, the best model, then FINISHED."""
        per_class = plots.per_class_accuracy(result.test_logits, result.test_labels)
        self.log_metrics([
            ("test_accuracy", result.test_accuracy, 0),
            ("test_loss", result.test_loss, 0),
            ("best_val_accuracy", result.best_val_accuracy, 0),
            *((f"test_accuracy_class_{plots.class_slug(k)}", v, 0) for k, v in per_class.items()),
        ])  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="fashion-lab-plots-") as tmp:
            plots.run_plots(result, Path(tmp))
            self.log_artifacts(Path(tmp), "plots")
        if self.log_model:
            model = result.model.cpu().to(memory_format=torch.contiguous_format).eval()
            example = normalize(result.test_images[:2].unsqueeze(1))
            with mlflow.start_run(run_id=self.run_id):
                mlflow.pytorch.log_model(
                    model, name="model", input_example=example.numpy(),
                    pip_requirements=MODEL_REQUIREMENTS,
                )  # fmt: skip
        self.client.set_terminated(self.run_id, "FINISHED")

    def on_error(self, status: str, reason: str) -> None:
        """status is an MLflow run status: FAILED for errors, KILLED for pruning and Ctrl-C."""
        if self.run_id is None:
            return
        self.client.set_tag(self.run_id, "error", reason[:5000])
        self.client.set_terminated(self.run_id, status)


# ---------------------------------------------------------------------------------------------
# Studies (tune.py): one parent run per Optuna study, one child run per trial.

TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def check_store(experiment_name: str) -> str:
    """The experiment id, or TrackingError: a study should not start against a broken store."""
    try:
        return experiment_id(experiment_name)
    except MlflowException as e:
        raise TrackingError(f"MLflow tracking store {tracking_uri()} is unusable: {e}") from None


def start_study_run(
    experiment_name: str, study_name: str, params: Mapping[str, Any], files: Mapping[str, str]
) -> str:
    """The study's parent run: its settings as params, its base config and space as files."""
    c = client()
    tags = {"optuna_study": study_name, "git_commit": git_commit(),
            "mlflow.runName": f"study-{study_name}"}  # fmt: skip
    run_id = c.create_run(experiment_id(experiment_name), tags=tags).info.run_id
    c.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    for path, text in files.items():
        c.log_text(run_id, text, path)
    return run_id


def reopen_run(run_id: str) -> None:
    """A resumed or joined study's parent runs again until its launcher finishes."""
    if get_run(run_id).info.status != "RUNNING":
        client().update_run(run_id, status="RUNNING")


def end_run(run_id: str, status: str) -> None:
    client().set_terminated(run_id, status)


def end_trial_run(run_id: str, state: str, reason: str = "") -> None:
    """Mirror a trial state on its run: COMPLETE, PRUNED, FAIL -> FINISHED, KILLED, FAILED."""
    c = client()
    c.set_tag(run_id, "optuna_state", state)
    if reason:
        c.set_tag(run_id, "optuna_reason", reason[:5000])
    c.set_terminated(run_id, TRIAL_STATUS[state])


def log_study_best(
    parent_run_id: str, trial_number: int, value: float, params: Mapping[str, Any], run_id: str
) -> None:
    """best_val_accuracy with step = trial number, so the parent charts the study's progress."""
    c = client()
    now = int(time.time() * 1000)
    tags = {"best_trial": str(trial_number), "best_run_id": run_id}
    tags |= {f"best_{k}": str(v) for k, v in params.items()}
    c.log_batch(
        parent_run_id,
        metrics=[Metric("best_val_accuracy", float(value), now, trial_number)],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


def log_folder(run_id: str, folder: Path) -> None:
    client().log_artifacts(run_id, str(folder))


def log_text(run_id: str, text: str, path: str) -> None:
    client().log_text(run_id, text, path)


def log_retrain(parent_run_id: str, run_id: str, test_accuracy: float) -> None:
    c = client()
    c.set_tag(parent_run_id, "retrain_run_id", run_id)
    c.log_metric(parent_run_id, "retrain_test_accuracy", test_accuracy)


def delete_trial_checkpoints(parent_run_id: str, experiment_name: str, trials: set[int]) -> None:
    """Delete checkpoints/ of the parent's child runs for these trial numbers, once each."""
    if not trials:
        return
    c = client()
    children = c.search_runs(
        [experiment_id(experiment_name)],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=50000,
    )
    for run in children:
        tags = run.data.tags
        if tags.get("checkpoints") == "deleted" or tags.get("optuna_trial_number") is None:
            continue
        if int(tags["optuna_trial_number"]) in trials:
            repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=tracking_uri())
            repo.delete_artifacts("checkpoints")
            c.set_tag(run.info.run_id, "checkpoints", "deleted")
