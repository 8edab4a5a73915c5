"""train.py as a user runs it: a diverging run and a Ctrl-C'd one, each a real process."""

from __future__ import annotations

import signal

import pytest
from conftest import FAST, call_main, printed, signal_at
from mlflow.tracking import MlflowClient

from train import main as train_main

pytestmark = pytest.mark.slow


def test_divergence_exits_1_and_fails_the_run(store):
    res = call_main(
        train_main,
        *FAST,
        "--epochs",
        "2",
        "--lr",
        "100",
        "--schedule",
        "none",
        "--warmup-epochs",
        "0",
    )
    assert res.returncode == 1, res.stdout + res.stderr
    run_id = printed(res.stdout, "mlflow_run_id")
    # Caught at the first loss read (step 4 of --log-every 4), not after the epoch.
    says = f"error: run {run_id} diverged: train_loss at step 4 is "
    assert says in res.stderr and "(limit 1000.0); lower the lr" in res.stderr
    assert "Traceback" not in res.stderr
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("diverged: train_loss at step 4 is ")
    assert "val_accuracy" not in run.data.metrics and "test_accuracy" not in run.data.metrics


def test_ctrl_c_kills_the_run_and_resume_finishes_it(store):
    # "epoch 1/2" is printed once epoch 1 is checkpointed and logged.
    proc, out, err = signal_at([*FAST, "--epochs", "2"], "epoch 1/2", signal.SIGINT)
    assert proc.returncode == 130, out + err  # 128 + SIGINT, as a shell reports Ctrl-C
    run_id = printed(out, "mlflow_run_id")
    c = MlflowClient(store)
    run = c.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["stop_reason"] == "interrupted (Ctrl-C); resume with --resume"
    assert "test_accuracy" not in run.data.metrics

    resumed = call_main(train_main, "--resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    epochs = [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("epoch ")]
    assert epochs == ["2/2"]  # from the checkpoint of epoch 1, not from the start
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "test_accuracy" in run.data.metrics
    assert [m.step for m in c.get_metric_history(run_id, "val_accuracy")] == [1, 2]
