"""The MLflow side of a study's confirmation: one `confirm` run under the study's parent run,
and under it one run per (config, fresh seed), tagged `confirm_trial` and `confirm_seed`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from mlflow.entities import Metric, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from experiments.tracking.store import client, experiment_id, get_run, git_commit
from experiments.tracking.study import children, delete_checkpoints, reopen_run


class SeedRun(NamedTuple):
    run_id: str
    trial: int
    seed: int
    status: str  # the MLflow run's: RUNNING, FINISHED, KILLED or FAILED
    value: float | None  # its best_val_accuracy, once FINISHED
    error: str  # its `error` tag, if it FAILED


def open_confirm_run(
    experiment_name: str, parent_run_id: str, study_name: str, tags: Mapping[str, str]
) -> str:
    """The study's `confirm` run: made once (the parent's `confirm_run_id` tag names it), then
    reopened by every rerun, which sets tags anew (K and N may change between runs)."""
    c = client()
    run_id = get_run(parent_run_id).data.tags.get("confirm_run_id")
    if run_id and get_run(run_id).info.lifecycle_stage == "active":
        reopen_run(run_id)
    else:
        own = {
            "mlflow.parentRunId": parent_run_id,
            "mlflow.runName": "confirm",
            "optuna_study": study_name,
            "git_commit": git_commit(),
        }
        run_id = c.create_run(experiment_id(experiment_name), tags=own).info.run_id
        c.set_tag(parent_run_id, "confirm_run_id", run_id)
    c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
    return run_id


def seed_runs(experiment_name: str, confirm_run_id: str) -> list[SeedRun]:
    out = []
    for run in children(experiment_name, confirm_run_id):
        tags = run.data.tags
        if "confirm_trial" in tags and "confirm_seed" in tags:
            out.append(
                SeedRun(
                    run.info.run_id,
                    int(tags["confirm_trial"]),
                    int(tags["confirm_seed"]),
                    run.info.status,
                    run.data.metrics.get("best_val_accuracy"),
                    tags.get("error", ""),
                )
            )
    return out


def delete_run(run_id: str) -> None:
    client().delete_run(run_id)


def drop_checkpoints(run_id: str) -> None:
    delete_checkpoints(get_run(run_id))


def log_confirmed(
    confirm_run_id: str,
    parent_run_id: str,
    points: Iterable[tuple[str, float, int]],
    winner: int,
    summary: str,
) -> None:
    """Per-config statistics on the confirm run (step = trial number, as the parent's
    best_val_accuracy), the confirmed winner on both runs, and the summary, in Markdown, as the
    parent's description: the first thing its page in the UI shows."""
    c = client()
    now = int(time.time() * 1000)
    c.log_batch(
        confirm_run_id,
        metrics=[Metric(k, float(v), now, step) for k, v, step in points],
        tags=[RunTag("confirmed_trial", str(winner))],
    )
    c.log_batch(
        parent_run_id,
        tags=[RunTag("confirmed_trial", str(winner)), RunTag(MLFLOW_RUN_NOTE, summary)],
    )
