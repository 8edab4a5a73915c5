"""PostgreSQL study storage: nodes that create the schema at the same moment, and a password
that no message shows. The server is test_tune_distributed's throwaway cluster (trust auth, so
any password in the URL is accepted)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from conftest import FAST, call_main, run_ids
from mlflow.tracking import MlflowClient
from test_tune_distributed import postgres  # noqa: F401 (the fixture)

import tune
from experiments.tuning.storage import open_storage, storage_lock
from tune import main as tune_main

PASSWORD = "pw-Zq7vX2"  # no run id, path or number can contain it


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def exit_2_without_password(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run tune.main in this process: it must exit 2 with a message that hides the password."""
    assert tune.main(argv) == 2
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("url", "says"),
    [
        # Unparsable (the port): the URL cannot be rendered with the password hidden.
        ("postgresql://fl:{}@127.0.0.1:notaport/optuna", "is not a database URL"),
        ("postgresql://fl:{}@127.0.0.1:1/optuna", "port 1 failed: Connection refused"),
        ("foo://fl:{}@127.0.0.1/optuna", "unsupported database 'foo'"),
        ("postgresql+nodriver://fl:{}@127.0.0.1/optuna", "Can't load plugin"),
        ("postgresql://fl:{}@127.0.0.1:1/optuna?sslmode=bogus", 'invalid sslmode value: "bogus"'),
    ],
)
def test_no_storage_error_shows_the_password(store, capsys, url, says):
    err = exit_2_without_password(capsys, ["--storage", url.format(PASSWORD)])
    assert says in err and "fl:***@127.0.0.1" in err
    assert not Path(store.removeprefix("sqlite:///")).exists() or run_ids(store) == []


@pytest.mark.slow
def test_nodes_creating_the_schema_at_the_same_moment_all_get_it(postgres):  # noqa: F811
    # Threads, each with its own connection: the server sees concurrent sessions, as from
    # several machines. Without tune's retry all but one fail on a duplicate pg_type row.
    n = 4
    barrier, storages, errors = threading.Barrier(n), [], []

    def node() -> None:
        barrier.wait()
        try:
            storages.append(open_storage(postgres, 10, 60, lambda study, trial: None))
        except Exception as e:  # collected, so the assertion shows every node's error
            errors.append(e)

    threads = [threading.Thread(target=node) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(storages) == n
    for s in storages:
        assert s.get_current_version() == s.get_head_version()
    optuna.create_study(study_name="one", storage=storages[0])
    assert all([st.study_name for st in s.get_all_studies()] == ["one"] for s in storages)


@pytest.mark.slow
def test_the_confirm_lock_lets_one_node_at_a_time_through(postgres):  # noqa: F811
    # Two nodes' storages: the second waits on the server while the first holds the lock.
    first, second = (open_storage(postgres, 10, 60, lambda study, trial: None) for _ in range(2))
    entered = []

    def advisory(granted: bool) -> int:
        query = f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = {granted}"
        with first.engine.connect() as conn:
            return conn.execute(sqlalchemy.text(query)).scalar()

    def later_node() -> None:
        with storage_lock(second, postgres, "confirm-lock"):
            entered.append("second")

    with storage_lock(first, postgres, "confirm-lock"):
        entered.append("first")
        waiting = threading.Thread(target=later_node)
        waiting.start()
        deadline = time.monotonic() + 60
        while advisory(granted=False) == 0:  # the second node's request reaches the server
            assert time.monotonic() < deadline, "the second node never asked for the lock"
            time.sleep(0.1)
        assert entered == ["first"] and advisory(granted=True) == 1
    waiting.join(timeout=60)
    assert entered == ["first", "second"]
    assert advisory(granted=True) == 0  # given back, though the pool keeps the connections


@pytest.mark.slow
def test_no_message_of_a_study_shows_the_password(postgres, store, tmp_path, capsys):  # noqa: F811
    url = with_password(postgres)
    args = [
        *FAST,
        "--width",
        "8",
        "--storage",
        url,
        "--study-name",
        "pw",
        "--n-trials",
        "1",
        "--epochs",
        "1",
        "--pruner",
        "none",
        "--output-dir",
        str(tmp_path),
        "--confirm-top",
        "0",
    ]
    res = call_main(tune_main, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert PASSWORD not in res.stdout + res.stderr
    c = MlflowClient(store)
    for run_id in run_ids(store):
        data = c.get_run(run_id).data
        assert PASSWORD not in str(data.params) + str(data.tags), run_id
    assert PASSWORD not in (tmp_path / "best.yaml").read_text()

    # Refusals from the live server and from the study it holds.
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: float, low: 0.01, high: 0.1}\n")
    err = exit_2_without_password(capsys, [*args, "--space", str(space)])
    assert "study 'pw' was started with another --config/--space" in err
    err = exit_2_without_password(capsys, ["--storage", url.replace("/optuna", "/nope")])
    assert 'database "nope" does not exist' in err and "postgres:***@127.0.0.1" in err
