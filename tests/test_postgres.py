"""PostgreSQL study storage: nodes that create the schema at the same moment, the lock that lets
one node at a time confirm, and URLs that carry a password, refused before any connection. The
server is test_tune_distributed's throwaway cluster (trust auth); a cluster that asks for a
password is test_auth's."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from conftest import run_ids
from test_tune_distributed import postgres  # noqa: F401 (the fixture)

import tune
from experiments.tuning.storage import open_storage, storage_lock
from experiments.urls import has_password

PASSWORD = secrets.token_urlsafe(12)


def exit_2(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run tune.main in this process: it must exit 2 with a message that hides the password."""
    assert tune.main(argv) == 2
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://fl:{}@127.0.0.1/optuna",
        "postgresql+psycopg2://fl:{}@127.0.0.1:5432/optuna",
        "postgresql://fl@127.0.0.1/optuna?password={}",
        "postgresql://fl:{}@127.0.0.1:notaport/optuna",  # unparsable: refused all the same
        "mysql://fl:{}@127.0.0.1/optuna",
    ],
)
def test_a_storage_url_with_a_password_is_refused_before_any_connection(store, capsys, url):
    # Refused by the launcher, before it starts workers with its command line.
    err = exit_2(capsys, ["--storage", url.format(PASSWORD), "--workers", "2"])
    assert "--storage carries a password" in err and "PGPASSWORD" in err and "~/.pgpass" in err
    assert not Path(store.removeprefix("sqlite:///")).exists() or run_ids(store) == []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://fl@127.0.0.1:notaport/optuna", "is not a database URL"),
        ("postgresql://fl@127.0.0.1:1/optuna", "port 1 failed: Connection refused"),
        ("foo://fl@127.0.0.1/optuna", "unsupported database 'foo'"),
        ("postgresql+nodriver://fl@127.0.0.1/optuna", "Can't load plugin"),
        ("postgresql://fl@127.0.0.1:1/optuna?sslmode=bogus", 'invalid sslmode value: "bogus"'),
    ],
)
def test_a_storage_that_cannot_be_opened_is_named_with_the_reason(store, capsys, url, says):
    err = exit_2(capsys, ["--storage", url])
    assert says in err and "fl@127.0.0.1" in err and "PGPASSWORD" in err


@pytest.mark.parametrize(
    ("url", "has"),
    [
        ("postgresql://fl:pw@db/optuna", True),
        ("postgresql://fl:pw@db:notaport/optuna", True),
        ("postgresql://fl@db/optuna?sslmode=require&password=pw", True),
        ("http://admin:pw@127.0.0.1:5000", True),
        ("postgresql://fl@db/optuna?passfile=/home/fl/.pgpass", False),
        ("postgresql://fl:@db/optuna", False),  # an empty password is none
        ("sqlite:///mlruns/optuna.db", False),
        ("http://127.0.0.1:5000", False),
    ],
)
def test_has_password_finds_the_userinfo_and_the_query_parameter(url, has):
    assert has_password(url) is has


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
