"""Shared fixtures: an isolated MLflow store per test and a helper to run the CLIs for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Small real-data runs: tutorial_cnn has dropout, so resume tests also cover the RNG state.
FAST = ["--model", "tutorial_cnn", "--train-subset", "1024", "--batch-size", "128",
        "--val-size", "1000", "--log-every", "4", "--no-augment"]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking store, for this process and for the CLIs it starts."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


def run_cli(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
        timeout=timeout, cwd=ROOT, env=cli_env(),
    )  # fmt: skip


def run_ids(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    return [r.info.run_id for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]
