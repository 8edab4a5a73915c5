"""Where a study lives (an Optuna RDB storage: SQLite, PostgreSQL), its sampler and pruner,
and what the storage does with a trial whose worker died."""

from __future__ import annotations

import contextlib
import fcntl
import random
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from experiments.config import (
    ConfigError,
)
from experiments.urls import has_password

SAMPLERS = ("tpe", "random", "qmc", "gp", "nsgaii")
PRUNERS = ("sha", "hyperband", "median", "none")
MAX_RETRIES = 3


def open_storage(
    url: str, heartbeat: int, grace: int, on_stale: Callable[[optuna.Study, FrozenTrial], None]
) -> RDBStorage:
    """An RDB storage with heartbeats, or ConfigError naming the URL and what to change."""
    if has_password(url):
        # Refused, not hidden from the workers alone: the launcher's own command line already
        # shows it to every user of the machine.
        raise ConfigError(
            "--storage carries a password, which every user of this machine can read on the "
            "command line: remove it, and set PGPASSWORD or put it in ~/.pgpass (mode 600); for "
            "MySQL, in ~/.my.cnf"
        )
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        raise ConfigError(f"--storage {url!r} is not a database URL; {STORAGE_HINT}") from None
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise ConfigError(f"--storage {shown}: unsupported database {backend!r}; {STORAGE_HINT}")
    if backend == "sqlite":
        # Several local workers write to one file; wait for the lock rather than fail.
        connect_args: dict[str, Any] = {"timeout": 60}
    else:
        # A wrong host should fail in seconds, not hang a cluster job.
        connect_args = {"connect_timeout": 10}
        if parsed.drivername == "postgresql":
            # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2.
            url = parsed.set(drivername="postgresql+psycopg2").render_as_string(False)
    for attempt in range(1, 6):
        try:
            # A fresh SQLite file gets its tables from whichever process comes first.
            with sqlite_lock(url, "create-lock"):
                return RDBStorage(
                    url,
                    engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
                    heartbeat_interval=heartbeat,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=on_stale,
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            # Nodes that create a fresh database's tables at once collide; the losers find the
            # tables there on their next try.
            error = e
            if attempt < 5:
                time.sleep(attempt * (0.5 + random.random()))
        except Exception as e:  # sqlalchemy, driver and Optuna schema errors alike
            error = e
            break
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if any(s in first for s in ("password authentication failed", "no password supplied")):
        raise ConfigError(
            f"the PostgreSQL study storage {shown} refused user {parsed.username!r}: {first}; "
            "set PGPASSWORD, or put the password in ~/.pgpass (host:port:database:user:password, "
            "mode 600)"
        )
    raise ConfigError(f"--storage {shown} cannot be opened: {first}; {STORAGE_HINT}")


STORAGE_HINT = (
    "use sqlite:///path/optuna.db or postgresql://user@host:5432/db with the password in "
    "PGPASSWORD or ~/.pgpass"
)


@contextlib.contextmanager
def sqlite_lock(url: str, suffix: str) -> Iterator[None]:
    """A file lock beside a SQLite database, for what SQLite cannot serialize itself; nothing
    for other databases (a SQLite study never spans machines)."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        yield
        return
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{parsed.database}.{suffix}", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@contextlib.contextmanager
def storage_lock(storage: RDBStorage, url: str, name: str) -> Iterator[None]:
    """Held by one process of all that share the study's storage, on any machine, until the
    block ends or the process dies: a file lock for SQLite, the database's advisory lock for
    PostgreSQL and MySQL (which goes with the holder's connection)."""
    backend = sqlalchemy.engine.make_url(url).get_backend_name()
    if backend == "sqlite":
        with sqlite_lock(url, name):
            yield
        return
    if backend == "postgresql":
        take = "SELECT pg_advisory_lock(:key)"
        give = "SELECT pg_advisory_unlock(:key)"
        key: int | str = zlib.crc32(name.encode())
    else:
        take, give, key = "SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)", name
    with storage.engine.connect() as conn:
        conn.execute(sqlalchemy.text(take), {"key": key})
        try:
            yield
        finally:
            # The pool keeps the connection open, and with it a lock not given back.
            conn.execute(sqlalchemy.text(give), {"key": key})


def make_sampler(name: str, seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    # Optuna's 10 random startup trials would be most of a small CPU study: model sooner.
    startup = max(3, min(10, n_trials // 3))
    if name == "tpe":
        # Multivariate, so it learns which values go together (an optimizer and its lr range);
        # grouped, so a conditional parameter is modelled with the trials that drew it.
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, multivariate=True, group=True
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(scramble=True, seed=seed, warn_asynchronous_seeding=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.NSGAIISampler(seed=seed)


def run_percent(epoch: int, epochs: int) -> int:
    """How far a trial is through its own run, in percent: the step it reports its val accuracy
    at, and so the unit of every pruner's rungs. One-cycle and cosine spread their lr curve over
    the run's length, so two trials at the same percent are at the same point of their curves
    however many epochs each runs; compared at the same epoch, a 30-epoch trial still near its
    peak lr would lose to a 15-epoch one already annealed, and be pruned for its length alone."""
    return max(1, round(100 * epoch / epochs))


def make_pruner(
    name: str, first_rung: int, startup: int, reduction_factor: int
) -> optuna.pruners.BasePruner:
    """first_rung: the percent of a run at which trials are first compared (see run_percent)."""
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first_rung, reduction_factor=reduction_factor
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=first_rung, max_resource=100, reduction_factor=reduction_factor
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=first_rung)
    return optuna.pruners.NopPruner()


# Re-queued trials carry their reports over, so the pruner judges them on the whole curve.
requeue = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES, inherit_intermediate_values=True)


class StaleTrials:
    """The storage's callback for a trial whose worker stopped beating: fail its run, re-queue."""

    def __init__(self, tracking: ModuleType, grace: int, name: str) -> None:
        self.tracking, self.grace, self.name = tracking, grace, name

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = (
            f"worker died: no heartbeat for {self.grace}s; re-queued to resume from its checkpoint"
        )
        print(f"{self.name}: trial {trial.number} is stale: {reason}", flush=True)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            self.tracking.end_trial_run(run_id, "FAIL", reason)
        requeue(study, trial)
