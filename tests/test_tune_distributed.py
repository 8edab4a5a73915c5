"""Many machines, simulated on one: a throwaway PostgreSQL study storage, an MLflow tracking
server, and two tune.py processes started separately that join one study.

Both servers listen on 127.0.0.1 only and are stopped by the pid this file started.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import optuna
import pytest
from conftest import FAST, ROOT, Postgres, cli_env
from mlflow.tracking import MlflowClient


@pytest.fixture
def postgres() -> Iterator[str]:
    """A fresh cluster that trusts any connection, with a database for the study."""
    pg = Postgres()
    try:
        pg.start()
        pg.execute("CREATE DATABASE optuna")
        yield pg.url("optuna")
    finally:
        pg.stop()


def node(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tune.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.slow
def test_two_launchers_share_one_postgres_study_and_one_parent_run(
    postgres, mlflow_server, tmp_path
):
    args = [
        *FAST,
        "--storage",
        postgres,
        "--study-name",
        "two-nodes",
        "--n-trials",
        "4",
        "--epochs",
        "1",
        "--pruner",
        "none",
        "--output-dir",
        str(tmp_path / "out"),
        "--confirm-top",
        "0",
    ]
    # As if on two machines: separate processes, no shared state but the two servers.
    env = {**cli_env(), "MLFLOW_TRACKING_URI": mlflow_server.url, "TQDM_DISABLE": "1"}
    nodes = [node(args, env), node(args, env)]
    outs = [p.communicate(timeout=400) for p in nodes]
    for p, (out, err) in zip(nodes, outs, strict=True):
        assert p.returncode == 0, out + err

    parents = {
        next(line.split()[-1] for line in out.splitlines() if line.startswith("parent_run_id:"))
        for out, _ in outs
    }
    assert len(parents) == 1
    parent = parents.pop()
    # Which node claims which trials depends on which starts first, and one may claim all four
    # before the other joins: the union is what must hold, each trial run once.
    assert all("tune: joined study two-nodes" in out for out, _ in outs)
    started = sorted(int(n) for out, _ in outs for n in re.findall(r"trial (\d+) starts: ", out))
    assert started == [0, 1, 2, 3], started

    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; tune.py picks psycopg2 itself.
    storage = postgres.replace("postgresql://", "postgresql+psycopg2://")
    trials = optuna.load_study(study_name="two-nodes", storage=storage).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    c = MlflowClient(mlflow_server.url)
    assert c.get_run(parent).data.tags["optuna_study"] == "two-nodes"
    exp = c.get_run(parent).info.experiment_id
    children = c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted(int(r.data.tags["optuna_trial_number"]) for r in children) == [0, 1, 2, 3]
    assert {r.info.run_id for r in children} == {t.user_attrs["mlflow_run_id"] for t in trials}
    assert all(r.info.status == "FINISHED" for r in children)
    studies = c.search_runs([exp], filter_string="tags.optuna_study = 'two-nodes'")
    assert len(studies) == 5  # one parent, four trials: the second node made no parent of its own
    # Through the server's artifact proxy: only the best trial kept its checkpoints.
    assert sum(bool(c.list_artifacts(r.info.run_id, "checkpoints")) for r in children) == 1
