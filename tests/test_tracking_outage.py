"""A tracking server that goes away mid-run: a real `mlflow server`, stopped and started again.

The outage limit is cut to seconds through its environment variable; the server listens on
127.0.0.1 only and is stopped by the process group this file started.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, ROOT, cli_env
from mlflow.tracking import MlflowClient

from experiments.tracking import OUTAGE_ENV

pytestmark = pytest.mark.slow

EPOCHS = 8
ARGS = [*FAST, "--epochs", str(EPOCHS)]


def train_in(folder: Path, *args: str) -> subprocess.Popen:
    """train.py run from folder, where a long outage leaves its checkpoint (under mlruns/)."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=folder,
        env=cli_env(),
    )


def read_until(proc: subprocess.Popen, start: str, seen: list[str]) -> str:
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(start):
            return line
    pytest.fail(f"never printed {start!r}:\n{''.join(seen)}")


def assert_each_point_once(url: str, run_id: str) -> None:
    """The run finished with every epoch's metrics and every train_loss point exactly once."""
    c = MlflowClient(url)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ["val_accuracy", "val_loss", "train_loss_epoch", "epoch_time_s"]:
        assert [m.step for m in c.get_metric_history(run_id, key)] == list(range(1, EPOCHS + 1))
    steps = sorted(m.step for m in c.get_metric_history(run_id, "train_loss"))
    assert steps == list(range(4, 8 * EPOCHS + 1, 4))  # 8 steps an epoch, a point every 4
    assert [m.step for m in c.get_metric_history(run_id, "test_accuracy")] == [EPOCHS]
    assert {a.path for a in c.list_artifacts(run_id, "checkpoints")} == {
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    }


def test_an_outage_shorter_than_the_limit_loses_nothing(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv(OUTAGE_ENV, "120")
    proc, seen = train_in(tmp_path, *ARGS), []
    read_until(proc, "epoch 1/", seen)
    mlflow_server.stop()
    read_until(proc, "tracking: ", seen)
    read_until(proc, "epoch ", seen)  # training went on while the server was away
    mlflow_server.start()
    out, _ = proc.communicate(timeout=300)
    text = "".join(seen) + out
    assert proc.returncode == 0, text
    assert "answers again after" in text
    run_id = next(s.split()[-1] for s in text.splitlines() if s.startswith("run_id:"))
    assert_each_point_once(mlflow_server.url, run_id)


def test_a_longer_outage_stops_the_run_and_resume_takes_its_checkpoint(
    mlflow_server, tmp_path, monkeypatch
):
    monkeypatch.setenv(OUTAGE_ENV, "3")
    proc, seen = train_in(tmp_path, *ARGS), []
    read_until(proc, "mlflow_run_id:", seen)
    read_until(proc, "epoch 1/", seen)
    mlflow_server.stop()
    out, _ = proc.communicate(timeout=300)
    text = "".join(seen) + out
    assert proc.returncode == 1, text
    assert "has failed for" in text and "(limit 3 s" in text
    checkpoint = Path(text.split("continue it with: python train.py --resume ")[1].split()[0])
    assert checkpoint.is_file() and checkpoint.is_relative_to(tmp_path / "mlruns")

    mlflow_server.start()
    resumed = train_in(tmp_path, "--resume", str(checkpoint))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    run_id = next(s.split()[-1] for s in seen if s.startswith("mlflow_run_id:"))
    assert f"run_id: {run_id}" in out  # the same run goes on
    assert_each_point_once(mlflow_server.url, run_id)
