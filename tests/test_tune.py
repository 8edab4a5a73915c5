"""tune.py: bad input, and real studies on FashionMNIST slices.

Studies run tutorial_cnn on 1024 images for 1-3 epochs, so each trial takes seconds.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import ROOT, call_main, printed, run_ids, start
from helpers import children, load, study_args, write
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

import tune
from experiments.config import load_config, validate
from tune import main as tune_main

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
DEFAULT_SPACE = ROOT / "experiments" / "spaces" / "default.yaml"


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
        (["--pruner", "asha"], "invalid choice: 'asha' (choose from 'sha', 'hyperband', 'median'"),
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
    first = start("tune.py", *args)
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
    assert sorted(retry.intermediate_values) == [50, 100]  # percent of the run, both epochs


@pytest.mark.slow
def test_four_launchers_started_together_on_fresh_stores_share_one_study(empty_store, tmp_path):
    args = [*study_args(tmp_path), "--space", str(DEFAULT_SPACE)]
    args += ["--n-trials", "4", "--epochs", "1", "--pruner", "none", "--threads", "1"]
    procs = [start("tune.py", *args) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err[-3000:]
    assert len({printed(out, "parent_run_id") for out, _ in outs}) == 1
    trials = load(tmp_path).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
