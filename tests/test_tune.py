"""tune.py: the search space, bad input, and real studies on FashionMNIST slices.

Studies run tutorial_cnn on 1024 images for 1-3 epochs, so each trial takes seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import weakref
from pathlib import Path
from typing import ClassVar

import optuna
import pandas as pd
import pytest
import torch
from conftest import FAST, ROOT, call_main, cli_env, run_ids
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

import tune
from experiments import tracking
from experiments.config import CHOICES, Config, ConfigError, apply, load_config, validate
from experiments.tuning import study as tuning_study
from experiments.tuning.space import Param, load_space, suggest
from experiments.tuning.study import create_or_join, setup
from experiments.tuning.worker import Worker
from models import registry
from models.tutorial_cnn import TutorialCNN
from train import main as train_main
from tune import main as tune_main

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
DEFAULT_SPACE = ROOT / "experiments" / "spaces" / "default.yaml"


def study_args(tmp_path: Path, name: str = "t") -> list[str]:
    return [
        *FAST,
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--study-name",
        name,
        "--output-dir",
        str(tmp_path / "out"),
    ]


def printed(out: str, key: str) -> str:
    return next(line.split()[-1] for line in out.splitlines() if line.startswith(f"{key}:"))


def load(tmp_path: Path, name: str = "t") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")


def children(uri: str, parent_run_id: str) -> list:
    c = MlflowClient(uri)
    exp = c.get_run(parent_run_id).info.experiment_id
    return c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- the search space ------------------------------------------------------------------------


def test_default_space_covers_lr_batch_size_init_and_optimizer():
    space = load_space(DEFAULT_SPACE, Config())
    assert space["lr"] == Param("float", low=1e-4, high=0.3, log=True)
    assert space["batch_size"].choices == (64, 128, 256, 512)
    assert set(space["init"].choices) == set(CHOICES["init"])
    assert set(space["optimizer"].choices) == set(CHOICES["optimizer"])


def test_suggest_returns_fixed_values_and_samples_within_the_space():
    space = load_space(DEFAULT_SPACE, Config())
    fixed = {"lr": 0.01, "batch_size": 128, "init": "orthogonal", "optimizer": "adamw"}
    assert suggest(optuna.trial.FixedTrial(fixed), space) == fixed

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        params = suggest(study.ask(), space)
        assert 1e-4 <= params["lr"] <= 0.3
        assert params["batch_size"] in (64, 128, 256, 512)
        validate(apply(Config(), params, "test"))  # every draw is a runnable config


def test_int_and_stepped_float_parameters():
    space = {
        "epochs": Param("int", low=2, high=6, step=2),
        "momentum": Param("float", low=0.8, high=0.95, step=0.05),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        p = suggest(study.ask(), space)
        assert p["epochs"] in (2, 4, 6)
        assert round(p["momentum"] / 0.05, 6).is_integer()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("[lr, batch_size]", "must map config fields to distributions"),
        ("num_layers: {type: int, low: 1, high: 3}", "num_layers: not a config field"),
        ("run_name: {type: categorical, choices: [a, b]}", "not a hyperparameter"),
        ("lr: {type: normal, low: 0.1, high: 1}", "type: float, int or categorical"),
        ("lr: 0.1", "type: float, int or categorical"),
        ("lr: {type: float, low: 0.3, high: 0.001}", "low must be < high"),
        ("lr: {type: float, low: 0.1, high: 0.1}", "low must be < high"),
        ("lr: {type: float, low: 0, high: 0.1}", "lr: must be > 0"),
        ("lr: {type: float, low: 0.1}", "needs low and high"),
        ("lr: {type: float, lo: 0.1, high: 1}", "unknown key(s) lo"),
        ("weight_decay: {type: float, low: 0, high: 0.1, log: true}", "log: true needs low > 0"),
        ("lr: {type: float, low: 0.01, high: 1, log: yes please}", "log must be true or false"),
        ("batch_size: {type: float, low: 32, high: 512}", "the field is int"),
        ("batch_size: {type: int, low: 32, high: 512, step: 0.5}", "step must be an integer"),
        ("optimizer: {type: categorical, choices: []}", "choices must be a non-empty list"),
        ("optimizer: {type: categorical, choices: [sgd, lion]}", "allowed: sgd, adam"),
        ("init: {type: categorical, choices: [he]}", "allowed: default, xavier_uniform"),
        ("batch_size: {type: categorical, choices: [64, big]}", "batch_size: expected a int"),
        ("batch_size: {type: categorical, choices: [64, 64]}", "repeat a value"),
    ],
)
def test_invalid_space_names_the_problem(tmp_path, text, says):
    with pytest.raises(ConfigError, match="search space") as e:
        load_space(write(tmp_path, "space.yaml", text), Config())
    assert says in str(e.value)


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-4 as a string; the space must still take it as a float.
    space = load_space(
        write(tmp_path, "s.yaml", "lr: {type: float, low: 1e-4, high: 1e-1}"), Config()
    )
    assert (space["lr"].low, space["lr"].high) == (1e-4, 0.1)


# --- bad input: exit 2, a clear message, nothing created ---------------------------------------


def exit_code(argv: list[str]) -> int:
    try:
        return tune.main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--storage", "foo://x"], "unsupported database 'foo'"),
        (["--storage", "not a url"], "is not a database URL"),
        (
            ["--storage", "postgresql://nobody@127.0.0.1:1/optuna"],
            "port 1 failed: Connection refused",
        ),
        (["--sampler", "bayes"], "invalid choice: 'bayes' (choose from 'tpe', 'random', 'qmc'"),
        (["--pruner", "asha"], "invalid choice: 'asha' (choose from 'median', 'hyperband'"),
        (["--n-trials", "0"], "--n-trials: must be >= 1, got 0"),
        (["--workers", "0"], "--workers: must be >= 1"),
        (["--timeout", "-5"], "--timeout: must be > 0"),
        (["--heartbeat-interval", "5", "--grace-period", "5"], "must exceed --heartbeat-interval"),
        (["--val-size", "0"], "a study needs a validation split"),
        (["--optimizer", "lion"], "optimizer: unknown value 'lion'"),
        (["--space", "nowhere.yaml"], "search space nowhere.yaml does not exist"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(store, tmp_path, capsys, args, says):
    storage = tmp_path / "optuna.db"
    argv = ["--storage", f"sqlite:///{storage}", "--study-name", "bad", *args]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert says in err
    assert "Traceback" not in err
    assert not storage.exists() or optuna.get_all_study_names(f"sqlite:///{storage}") == []
    assert not Path(store.removeprefix("sqlite:///")).exists() or run_ids(store) == []


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "is empty"), ("lr: {type: float, low: 1, high: 0.1}", "low must be < high")],
)
def test_empty_or_invalid_space_exits_2(store, tmp_path, capsys, text, says):
    storage = tmp_path / "optuna.db"
    argv = ["--storage", f"sqlite:///{storage}", "--space", write(tmp_path, "s.yaml", text)]
    assert exit_code(argv) == 2
    assert says in capsys.readouterr().err
    assert not storage.exists() or optuna.get_all_study_names(f"sqlite:///{storage}") == []
    assert not Path(store.removeprefix("sqlite:///")).exists() or run_ids(store) == []


def test_bad_storage_from_the_command_line(store, tmp_path):
    res = call_main(tune_main, "--storage", "foo://x", "--n-trials", "1")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "error: --storage foo://x: unsupported database 'foo'" in res.stderr
    assert "sqlite:///path/optuna.db or postgresql://" in res.stderr  # says what would work
    assert not Path(store.removeprefix("sqlite:///")).exists() or run_ids(store) == []


# --- real studies ------------------------------------------------------------------------------


@pytest.mark.slow
def test_six_trials_on_two_workers_give_six_child_runs_under_one_parent(store, tmp_path):
    res = call_main(
        tune_main,
        *study_args(tmp_path),
        "--space",
        str(DEFAULT_SPACE),
        "--n-trials",
        "6",
        "--workers",
        "2",
        "--epochs",
        "1",
        "--pruner-startup-trials",
        "2",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[w0] w0: joined study t" in res.stdout and "[w1] w1: joined study t" in res.stdout
    assert res.stdout.count(" starts: ") == 6

    trials = load(tmp_path).trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state.is_finished() for t in trials)
    parent = MlflowClient(store).get_run(printed(res.stdout, "parent_run_id"))
    assert parent.data.tags["optuna_study"] == "t"
    assert parent.info.status == "FINISHED"

    runs = children(store, parent.info.run_id)
    assert len(runs) == 6
    by_number = {int(r.data.tags["optuna_trial_number"]): r for r in runs}
    for t in trials:
        run = by_number[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.info.run_name == f"trial-{t.number:03d}"
        assert run.data.tags["optuna_state"] == t.state.name
        assert run.info.status == STATUS[t.state.name]
        assert run.data.metrics["trial_number"] == t.number
        for key in ("lr", "batch_size", "init", "optimizer"):
            assert run.data.params[key] == str(t.params[key])
        # A trial is ranked on val accuracy alone: no test pass, no plots (--trial-test adds them).
        assert "test_accuracy" not in run.data.metrics
        assert not MlflowClient(store).list_artifacts(run.info.run_id, "plots")
        if t.state == TrialState.COMPLETE:
            assert run.data.metrics["best_val_accuracy"] == pytest.approx(t.value)

    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert parent.data.tags["best_trial"] == str(best.number)
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best.value)
    # Only the best trial keeps its checkpoints; its config is written for train.py --config.
    c = MlflowClient(store)
    kept = [r for r in runs if c.list_artifacts(r.info.run_id, "checkpoints")]
    assert [r.info.run_id for r in kept] == [best.user_attrs["mlflow_run_id"]]
    best_cfg = validate(load_config(printed(res.stdout, "best_config")))
    assert {k: getattr(best_cfg, k) for k in best.params} == best.params

    # The parent holds the study's views and one trials.csv row per trial.
    plots = {a.path for a in c.list_artifacts(parent.info.run_id, "plots")}
    for name in [
        "optimization_history",
        "parallel_coordinate",
        "val_accuracy_vs_lr",
        "val_accuracy_by_optimizer_init",
    ]:
        assert f"plots/{name}.png" in plots
    table = pd.read_csv(c.download_artifacts(parent.info.run_id, "trials.csv"))
    assert sorted(table["number"]) == list(range(6))


@pytest.mark.slow
def test_diverging_trials_are_pruned_with_a_reason_and_the_study_goes_on(store, tmp_path):
    space = write(
        tmp_path,
        "diverge.yaml",
        "lr: {type: float, low: 10, high: 100, log: true}\n"
        "optimizer: {type: categorical, choices: [sgd, adam]}\n",
    )
    res = call_main(
        tune_main,
        *study_args(tmp_path),
        "--space",
        space,
        "--n-trials",
        "2",
        "--epochs",
        "1",
        "--schedule",
        "none",
        "--warmup-epochs",
        "0",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    for run in children(store, printed(res.stdout, "parent_run_id")):
        assert run.info.status == "KILLED"
        assert run.data.tags["optuna_reason"].startswith("diverged: train_loss")
    assert "0 complete, 2 pruned" in res.stdout


def start(args: list[str]) -> subprocess.Popen:
    # No progress bars: stderr is read only at the end, so it must not fill its pipe first.
    # SIGINT back to its default: a shell that runs pytest in the background starts it ignored,
    # and Python keeps an ignored SIGINT, so Ctrl-C would never reach tune.py.
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tune.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**cli_env(), "TQDM_DISABLE": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def stop_after_first_epoch(proc: subprocess.Popen, sig: signal.Signals) -> str:
    """Send sig once the first trial has checkpointed epoch 1 (its line is printed after)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("epoch 1/"):
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=120)
    assert any(s.startswith("epoch 1/") for s in seen), "".join(seen) + out + err
    return "".join(seen) + out


EXIT = {signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGTERM: 143}
WHY = {
    signal.SIGKILL: "no heartbeat",
    signal.SIGINT: "interrupted (Ctrl-C)",
    signal.SIGTERM: "terminated (SIGTERM)",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["sigkill", "ctrl-c", "sigterm"]
)
def test_stopped_worker_trial_is_retried_from_its_checkpoint(store, tmp_path, sig):
    args = [
        *study_args(tmp_path),
        "--space",
        str(DEFAULT_SPACE),
        "--n-trials",
        "1",
        "--epochs",
        "2",
        "--pruner",
        "none",
        "--heartbeat-interval",
        "1",
        "--grace-period",
        "2",
    ]
    first = start(args)
    out = stop_after_first_epoch(first, sig)
    assert first.returncode == EXIT[sig], out
    dead_run = printed(out, "mlflow_run_id")
    if sig != signal.SIGKILL:  # re-queued at once, not when its heartbeat runs out
        assert [t.state for t in load(tmp_path).trials] == [TrialState.FAIL, TrialState.WAITING]

    again = call_main(tune_main, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    dead, retry = load(tmp_path).trials  # the study's one trial, and the retry standing in
    assert dead.state == TrialState.FAIL
    assert retry.system_attrs["failed_trial"] == 0
    assert retry.params == dead.params
    assert retry.state == TrialState.COMPLETE
    assert "1 counted (budget 1): 1 complete" in again.stdout

    c = MlflowClient(store)
    stopped = c.get_run(dead_run)
    assert stopped.info.status == "FAILED"
    assert WHY[sig] in stopped.data.tags["optuna_reason"]
    resumed = c.get_run(retry.user_attrs["mlflow_run_id"])
    assert resumed.data.tags["mlflow.parentRunId"] == printed(out, "parent_run_id")
    assert resumed.data.tags["resumed_from_run"] == dead_run
    assert resumed.data.tags["resumed_from_epoch"] == "1"
    steps = [m.step for m in c.get_metric_history(resumed.info.run_id, "val_accuracy")]
    assert steps == [2]  # epoch 1 came from the checkpoint, not from a fresh start
    assert sorted(retry.intermediate_values) == [1, 2]


@pytest.mark.slow
def test_four_launchers_started_together_on_fresh_stores_share_one_study(store, tmp_path):
    args = [
        *study_args(tmp_path),
        "--space",
        str(DEFAULT_SPACE),
        "--n-trials",
        "4",
        "--epochs",
        "1",
        "--pruner",
        "none",
        "--threads",
        "1",
    ]
    procs = [start(args) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err[-3000:]
    assert len({printed(out, "parent_run_id") for out, _ in outs}) == 1
    trials = load(tmp_path).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)


# --- one study in this process, for what a test must reach inside a worker -------------------


def run_study(tmp_path: Path, *args: str) -> list[FrozenTrial]:
    """The launcher's setup, then one Worker, in this process; the study's trials."""
    argv = [*study_args(tmp_path), "--space", write(tmp_path, "lr.yaml", LR_SPACE), *args]
    st = setup(tune.build_parser().parse_args(argv), tracking)
    create_or_join(st)
    Worker(st, "w0").run(None)
    return load(tmp_path).trials


LR_SPACE = "lr: {type: float, low: 0.01, high: 0.1, log: true}\n"


class PruneFrom(optuna.pruners.BasePruner):
    """Says prune at every report from this epoch on, whatever the trial scored."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return (trial.last_step or 0) >= self.epoch


@pytest.mark.slow
def test_pruned_trial_run_ends_killed_with_its_epoch_and_no_error(store, tmp_path, monkeypatch):
    monkeypatch.setattr(tuning_study, "make_pruner", lambda *_: PruneFrom(1))
    (trial,) = run_study(tmp_path, "--n-trials", "1", "--epochs", "2")
    assert trial.state == TrialState.PRUNED
    run = MlflowClient(store).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert "error" not in run.data.tags  # never ended FAILED on the way
    assert run.data.tags["pruned_at_epoch"] == "1"
    assert run.data.tags["stop_reason"].startswith("pruned by the median pruner at epoch 1")


@pytest.mark.slow
def test_trial_is_never_pruned_after_its_last_epoch(store, tmp_path, monkeypatch):
    monkeypatch.setattr(tuning_study, "make_pruner", lambda *_: PruneFrom(2))
    (trial,) = run_study(tmp_path, "--n-trials", "1", "--epochs", "2")
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2]
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
