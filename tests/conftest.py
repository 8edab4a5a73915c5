"""Shared fixtures: an isolated MLflow store per test and a helper to run the CLIs for real."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# make test runs more workers than cores, and most tests start processes of their own: one
# torch thread each keeps the cores busy, where more would wait on each other. Set before any
# test module imports torch; the runs the tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Small real-data runs: tutorial_cnn has dropout, so resume tests also cover the RNG state.
FAST = [
    "--model",
    "tutorial_cnn",
    "--train-subset",
    "1024",
    "--batch-size",
    "128",
    "--val-size",
    "1000",
    "--log-every",
    "4",
    "--no-augment",
]
# A constant lr this high overshoots on 256 images: val accuracy peaks at epoch 3 of 5 (seen in
# bf16 and fp32, on 1 and 2 threads), so the weights to test are not the last ones.
PEAKED = [
    *FAST,
    "--train-subset",
    "256",
    "--batch-size",
    "16",
    "--lr",
    "0.08",
    "--schedule",
    "none",
    "--warmup-epochs",
    "0",
    "--seed",
    "3",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: the last test to start is then a short one, so no worker is left
    with a long queue while the others idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook; `pytest -m gpu` runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadgroup` (make test): test by test, those sharing a module's fixture together."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from scheduling import SharedFixtureScheduling, fixture_groups

    groups = fixture_groups(ROOT, ROOT / "tests")
    return SharedFixtureScheduling(config, log, groups=groups)


@pytest.fixture
def empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite tracking store not created yet, for this process and the CLIs it starts."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # mlflow.set_tracking_uri (which in-process runs call) outranks the variable: set both.
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty tracking store with its tables made: creating them costs seconds a store."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(empty_store: str, store_template: Path) -> str:
    """A fresh, empty SQLite tracking store, its tables made, as a user's store already has."""
    db = Path(empty_store.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store_template, db)
    return empty_store


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


def run_cli(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=cli_env(),
    )


def call_main(main: Callable[[list[str]], int], *args: str) -> subprocess.CompletedProcess:
    """A CLI's main() run in this process, as run_cli would run its script: the exit code and
    what it printed. No interpreter start-up, and the imports are paid once per session."""
    out, err = io.StringIO(), io.StringIO()
    # What main() changes for the whole process: SIGTERM's handler.
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with (
            contextlib.chdir(ROOT),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's own errors
                code = e.code
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def start(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A CLI run in the background, for tests that signal it. SIGINT is reset to its default:
    a shell that runs pytest in the background starts it ignored, and Python keeps an ignored
    SIGINT, so Ctrl-C would never arrive. No progress bars, so stderr cannot fill its pipe."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**cli_env(), "TQDM_DISABLE": "1", **(env or {})},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def printed(out: str, key: str) -> str:
    """The value of the last `key: value` line a CLI printed."""
    return [line.split()[-1] for line in out.splitlines() if line.startswith(f"{key}:")][-1]


def signal_at(args: list[str], line: str, sig: signal.Signals) -> tuple[subprocess.Popen, str, str]:
    """Start train.py, send sig once it prints a line starting with `line`; (process, all it
    printed to stdout, its stderr)."""
    proc = start("train.py", *args)
    seen = []
    for out in proc.stdout:
        seen.append(out)
        if out.startswith(line):
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=120)
    return proc, "".join(seen) + out, err


def kill_at(args: list[str], line: str, sig: signal.Signals) -> tuple[subprocess.Popen, str]:
    """Start train.py, send sig once it prints a line starting with `line`; (process, run id)."""
    proc, out, _ = signal_at(args, line, sig)
    assert "mlflow_run_id:" in out, f"never printed {line!r}"
    return proc, printed(out, "mlflow_run_id")


def run_ids(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    return [r.info.run_id for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    ready: Callable[[], object], what: str, proc: subprocess.Popen, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} before it was ready")
        if ready():
            return
        time.sleep(0.3)
    pytest.fail(f"{what} not ready after {timeout}s")


def mlflow_server_cmd(port: int, store: str, *extra: str) -> list[str]:
    """`mlflow server` with one worker on 127.0.0.1:port over the tracking store `store`."""
    listen = ["--workers", "1", "--host", "127.0.0.1", "--port", str(port)]
    return [sys.executable, "-m", "mlflow", "server", *listen, "--backend-store-uri", store, *extra]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 over a SQLite store in folder. stop() and start()
    again bring it back on the same port with the same store, as after an outage."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        store = f"sqlite:///{self.folder}/mlflow.db"
        return mlflow_server_cmd(
            self.port, store, "--artifacts-destination", str(self.folder / "artifacts")
        )

    def environment(self) -> dict[str, str]:
        return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

    def start(self) -> None:
        # Its own session, so the uvicorn worker it forks goes down with it. What it prints
        # goes to a file (a pipe nobody reads would fill and block it).
        with open(self.folder / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.environment(),
                start_new_session=True,
            )
        wait_until(self.healthy, "mlflow server", self.proc, timeout=90)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while self.healthy() and time.monotonic() < deadline:  # its worker may linger a moment
            time.sleep(0.3)


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Postgres:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 in a temp folder, run as the postgres
    user when we are root. With a password, every connection needs one (scram-sha-256);
    without, any is trusted. Without PostgreSQL it fails rather than skips: `make test-tools`
    installs it."""

    def __init__(self, password: str | None = None) -> None:
        self.password, self.port = password, free_port()
        # pytest's tmp_path is root-only; the server's user needs a directory of its own.
        self.home = Path(tempfile.mkdtemp(prefix="fashion-lab-pg-"))
        self.as_user = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        missing = [b for b in ("initdb", "postgres") if not (PG_BIN / b).exists()]
        if missing:
            pytest.fail(f"PostgreSQL 15 is not installed ({', '.join(missing)}); `make test-tools`")
        if self.as_user:
            shutil.chown(self.home, "postgres", "postgres")
        auth = ["-A", "trust"]
        if self.password is not None:
            pwfile = self.home / "pwfile"
            pwfile.write_text(self.password)
            if self.as_user:
                shutil.chown(pwfile, "postgres", "postgres")
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        data = self.home / "data"
        init = subprocess.run(
            [PG_BIN / "initdb", "-D", data, *auth, "-U", "postgres", "--no-sync"],
            capture_output=True,
            text=True,
            **self.as_user,
        )
        (self.home / "pwfile").unlink(missing_ok=True)
        assert init.returncode == 0, init.stderr
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        self.proc = subprocess.Popen(
            [PG_BIN / "postgres", "-D", data, "-p", str(self.port), "-k", self.home, *settings],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self.as_user,
        )
        wait_until(self.connect, "postgres", self.proc)

    def connect(self, dbname: str = "postgres") -> object | None:
        import psycopg2

        try:
            return psycopg2.connect(
                host="127.0.0.1",
                port=self.port,
                user="postgres",
                password=self.password,
                dbname=dbname,
            )
        except psycopg2.OperationalError:
            return None

    def execute(self, sql: str, *params: str) -> None:
        conn = self.connect()
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        conn.cursor().execute(sql, params or None)
        conn.close()

    def url(self, db: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: ends client sessions too
            self.proc.wait(timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def mlflow_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_template: Path
) -> Iterator[MlflowServer]:
    """A tracking server for this test and the CLIs it starts, over a store with its tables."""
    server = MlflowServer(tmp_path / "server")
    server.folder.mkdir()
    shutil.copyfile(store_template, server.folder / "mlflow.db")
    try:
        server.start()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        yield server
    finally:
        server.stop()
