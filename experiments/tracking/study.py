"""The MLflow side of an Optuna study: one parent run, a child run per trial mirroring its state."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from experiments.tracking.access import check_access
from experiments.tracking.store import (
    client,
    experiment_id,
    get_run,
    git_commit,
    tracking_uri,
)

TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def check_store(experiment_name: str, model: str | None = None) -> str:
    """The experiment id, or TrackingError: a study should not start against a broken store,
    nor with credentials or permissions its runs (or its retrain's registration as a version
    of `model`) will be refused."""
    return check_access(experiment_name, model, need="MANAGE")


def start_study_run(
    experiment_name: str, study_name: str, params: Mapping[str, Any], files: Mapping[str, str]
) -> str:
    """The study's parent run: its settings as params, its base config and space as files."""
    c = client()
    tags = {
        "optuna_study": study_name,
        "git_commit": git_commit(),
        "mlflow.runName": f"study-{study_name}",
    }
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


def children(experiment_name: str, parent_run_id: str) -> list[Run]:
    return client().search_runs(
        [experiment_id(experiment_name)],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=50000,
    )


def delete_checkpoints(run: Run) -> None:
    """Delete a run's checkpoints/ and tag it so, once."""
    if run.data.tags.get("checkpoints") == "deleted":
        return
    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=tracking_uri())
    # Workers sweep after every trial they finish; two may delete one folder at once.
    with contextlib.suppress(FileNotFoundError):
        repo.delete_artifacts("checkpoints")
    client().set_tag(run.info.run_id, "checkpoints", "deleted")


def delete_trial_checkpoints(parent_run_id: str, experiment_name: str, trials: set[int]) -> None:
    """Delete checkpoints/ of the parent's child runs for these trial numbers, once each."""
    if not trials:
        return
    for run in children(experiment_name, parent_run_id):
        number = run.data.tags.get("optuna_trial_number")
        if number is not None and int(number) in trials:
            delete_checkpoints(run)
