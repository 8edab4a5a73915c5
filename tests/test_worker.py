"""One study's worker in this process, for what a test must reach inside it: pruning, the last
epoch, an out-of-memory trial, a failure to record, a sweep racing another worker."""

from __future__ import annotations

import os
import shutil
import weakref
from pathlib import Path
from typing import ClassVar

import optuna
import pytest
import torch
from conftest import FAST, call_main, printed
from helpers import load, study_args, write
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

import tune
from experiments import tracking
from experiments.config import CHOICES
from experiments.tuning import study as tuning_study
from experiments.tuning.study import create_or_join, setup
from experiments.tuning.worker import Worker
from models import registry
from models.tutorial_cnn import TutorialCNN
from train import main as train_main


def run_study(tmp_path: Path, *args: str) -> list[FrozenTrial]:
    """The launcher's setup, then one Worker, in this process; the study's trials."""
    argv = [*study_args(tmp_path), "--space", write(tmp_path, "lr.yaml", LR_SPACE), *args]
    st = setup(tune.build_parser().parse_args(argv), tracking)
    create_or_join(st)
    Worker(st, "w0").run(None)
    return load(tmp_path).trials


LR_SPACE = "lr: {type: float, low: 0.01, high: 0.1, log: true}\n"


class PruneFrom(optuna.pruners.BasePruner):
    """Says prune at every report from this percent of the run on, whatever the trial scored."""

    def __init__(self, percent: int) -> None:
        self.percent = percent

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return (trial.last_step or 0) >= self.percent


@pytest.mark.slow
def test_pruned_trial_run_ends_killed_with_its_epoch_and_no_error(store, tmp_path, monkeypatch):
    monkeypatch.setattr(tuning_study, "make_pruner", lambda *_: PruneFrom(50))
    (trial,) = run_study(tmp_path, "--n-trials", "1", "--epochs", "2", "--pruner", "median")
    assert trial.state == TrialState.PRUNED
    run = MlflowClient(store).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert "error" not in run.data.tags  # never ended FAILED on the way
    assert run.data.tags["pruned_at_epoch"] == "1"
    assert run.data.tags["stop_reason"].startswith("pruned by the median pruner at epoch 1")


@pytest.mark.slow
def test_trial_is_never_pruned_after_its_last_epoch(store, tmp_path, monkeypatch):
    monkeypatch.setattr(tuning_study, "make_pruner", lambda *_: PruneFrom(100))
    (trial,) = run_study(tmp_path, "--n-trials", "1", "--epochs", "2")
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [50, 100]  # percent of the run
    assert trial.value == max(trial.intermediate_values.values())
    run = MlflowClient(store).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "pruned_at_epoch" not in run.data.tags


class OomOnce(TutorialCNN):
    """Out of GPU memory at the first forward pass in this process, fine afterwards."""

    struck: ClassVar[list[weakref.ref]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not OomOnce.struck:
            OomOnce.struck.append(weakref.ref(self))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


@pytest.mark.slow
def test_out_of_memory_fails_the_trial_with_its_reason_and_the_worker_goes_on(
    store, tmp_path, monkeypatch
):
    monkeypatch.setitem(registry.MODELS, "oom_cnn", OomOnce)
    monkeypatch.setitem(CHOICES, "model", [*CHOICES["model"], "oom_cnn"])
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(OomOnce.struck[0]()))
    trials = run_study(
        tmp_path, "--n-trials", "2", "--epochs", "1", "--model", "oom_cnn", "--pruner", "none"
    )
    # Failed for good: no retry queued; the next trial ran on the same worker.
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert not any("failed_trial" in t.system_attrs for t in trials)
    run = MlflowClient(store).get_run(trials[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["optuna_reason"].startswith(
        "out of GPU memory: model oom_cnn (width default), batch size 128, device cpu: "
        "CUDA out of memory"
    )
    assert emptied[0] is None  # the cache was emptied once the failed trial's model was gone


@pytest.mark.slow
def test_a_failure_to_record_a_trial_in_mlflow_does_not_end_the_worker(
    store, tmp_path, monkeypatch, capsys
):
    ended = []

    def end_once_then_fail(run_id: str, state: str, reason: str = "") -> None:
        ended.append(run_id)
        if len(ended) == 1:
            raise MlflowException("database is locked")
        real_end(run_id, state, reason)

    real_end = tracking.end_trial_run
    monkeypatch.setattr(tracking, "end_trial_run", end_once_then_fail)
    trials = run_study(tmp_path, "--n-trials", "2", "--epochs", "1", "--pruner", "none")
    # Optuna holds both results; the worker went on to the second trial and recorded it.
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert "recording it in MLflow failed" in capsys.readouterr().err
    second = MlflowClient(store).get_run(trials[1].user_attrs["mlflow_run_id"])
    assert second.info.status == "FINISHED"


@pytest.mark.slow
def test_sweeping_checkpoints_another_worker_already_removed_is_no_error(store, tmp_path):
    res = call_main(train_main, *FAST, "--epochs", "1", "--dry-run")
    assert res.returncode == 0, res.stderr
    run_id = printed(res.stdout, "run_id")
    c = MlflowClient(store)
    parent = c.create_run(c.get_run(run_id).info.experiment_id).info.run_id
    c.set_tag(run_id, "mlflow.parentRunId", parent)
    c.set_tag(run_id, "optuna_trial_number", "0")
    # The other worker removed the folder between this one's look and its delete.
    shutil.rmtree(c.get_run(run_id).info.artifact_uri.removeprefix("file://") + "/checkpoints")
    real_exists = os.path.exists
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os.path, "exists", lambda p: p.endswith("checkpoints") or real_exists(p))
        tracking.delete_trial_checkpoints(parent, "fashion-lab", {0})
    assert c.get_run(run_id).data.tags["checkpoints"] == "deleted"


def with_baseline(tmp_path: Path, *args: str) -> list[FrozenTrial]:
    """run_study's study with its baseline: lr 0.5 on 512 images without warmup learns, and
    trial 1, lr 1e-5, does not."""
    argv = [a for a in study_args(tmp_path) if a != "--no-baseline"]
    argv += [
        "--space",
        write(tmp_path, "lr.yaml", "lr: {type: categorical, choices: [1.0e-5, 0.5]}"),
    ]
    argv += ["--lr", "0.5", "--warmup-epochs", "0", "--train-subset", "512", "--val-size", "500"]
    argv += ["--enqueue", write(tmp_path, "slow.yaml", "lr: 1.0e-5\n"), "--n-trials", "2", *args]
    st = setup(tune.build_parser().parse_args(argv), tracking)
    create_or_join(st)
    Worker(st, "w0").run(None)
    return load(tmp_path).trials


@pytest.mark.slow
def test_the_baseline_is_never_pruned_where_every_other_trial_is(store, tmp_path, monkeypatch):
    monkeypatch.setattr(tuning_study, "make_pruner", lambda *_: PruneFrom(50))
    base, other = with_baseline(tmp_path, "--epochs", "2")
    assert base.user_attrs["enqueued_from"] == "the base config" and base.params == {"lr": 0.5}
    assert base.state == TrialState.COMPLETE and sorted(base.intermediate_values) == [50, 100]
    assert other.state == TrialState.PRUNED


@pytest.mark.slow
def test_successive_halving_prunes_at_its_rung_a_trial_the_baseline_beats_there(store, tmp_path):
    # Rungs at 50% (epoch 1 of 2) and 100%: half the trials at a rung go on, and the first to
    # reach it after the baseline must beat the baseline's value there.
    rungs = ["--pruner", "sha", "--prune-from-epoch", "1", "--reduction-factor", "2"]
    base, other = with_baseline(tmp_path, "--epochs", "2", *rungs)
    assert base.state == TrialState.COMPLETE and other.state == TrialState.PRUNED
    assert other.intermediate_values[50] < base.intermediate_values[50]
    run = MlflowClient(store).get_run(other.user_attrs["mlflow_run_id"])
    assert run.data.tags["pruned_at_epoch"] == "1"
    assert run.data.tags["stop_reason"].startswith("pruned by the sha pruner at epoch 1")
