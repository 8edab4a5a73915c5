"""Many machines, simulated on one: a throwaway PostgreSQL study storage, an MLflow tracking
server, and two tune.py processes started separately that join one study.

Both servers listen on 127.0.0.1 only and are stopped by the pid this file started. Without
PostgreSQL the test fails rather than skips: `make test-tools` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import FAST, ROOT, cli_env, free_port, wait_until
from mlflow.tracking import MlflowClient

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def postgres() -> Iterator[str]:
    """A fresh cluster in a temp dir, run as the postgres user when we are root."""
    missing = [b for b in ("initdb", "postgres") if not (PG_BIN / b).exists()]
    if missing:
        pytest.fail(f"PostgreSQL 15 is not installed ({', '.join(missing)}); run `make test-tools`")
    import psycopg2

    # pytest's tmp_path is root-only; the server's user needs a directory of its own.
    home = Path(tempfile.mkdtemp(prefix="fashion-lab-pg-"))
    as_user = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    if as_user:
        shutil.chown(home, "postgres", "postgres")
    init = subprocess.run(
        [PG_BIN / "initdb", "-D", home / "data", "-A", "trust", "-U", "postgres", "--no-sync"],
        capture_output=True,
        text=True,
        **as_user,
    )
    assert init.returncode == 0, init.stderr
    port = free_port()
    server = subprocess.Popen(
        [
            PG_BIN / "postgres",
            "-D",
            home / "data",
            "-p",
            str(port),
            "-k",
            home,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **as_user,
    )

    def connect():
        try:
            return psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        except psycopg2.OperationalError:
            return None

    try:
        wait_until(connect, "postgres", server)
        conn = connect()
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE optuna")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown: ends client sessions too
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


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
    starts = [out.count(" starts: ") for out, _ in outs]
    assert sum(starts) == 4 and all(starts), starts  # both nodes ran trials, none twice

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
