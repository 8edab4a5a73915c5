"""The tracking store: where it is, opening it safely, experiments, runs and their checkpoints."""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import read_mlflow_creds

from experiments.config import Config
from experiments.urls import has_password

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
# How long a run trains on while the tracking store does not answer, before it gives up.
OUTAGE_ENV = "FASHION_LAB_TRACKING_OUTAGE_S"
OUTAGE_DEFAULT_S = 300.0
# MLflow retries a failed request for about two minutes on its own, and training would wait
# all that time; the run's outbox retries instead, so each request fails fast.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class TrackingError(RuntimeError):
    """A run or storage that cannot be used; the message says which and why."""


class TrackingOutage(TrackingError):
    """The tracking store did not answer for longer than the outage limit; the run stopped."""


class TrackingRefused(TrackingError):
    """The tracking server refused this process's credentials, or the permission it needs."""


CREDENTIALS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials)"


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)
    if has_password(uri):
        # Refused rather than masked: every message that names the store prints its URI.
        raise TrackingError(
            f"$MLFLOW_TRACKING_URI carries a password: remove it and set {CREDENTIALS}"
        )
    return uri


def refusal(e: BaseException) -> TrackingRefused | None:
    """What the server refused (HTTP 401 or 403) and what to set; None for any other error."""
    if not isinstance(e, MlflowException):
        return None
    where = f"the MLflow tracking server at {tracking_uri()}"
    user, password = read_mlflow_creds()
    if e.error_code == "PERMISSION_DENIED":
        return TrackingRefused(
            f"{where} denies user {user!r} a request this run needs ({first_line(e)}); its admin "
            "can grant EDIT on the experiment and the registered model (docs/multi-node.md)"
        )
    if e.error_code != "UNAUTHENTICATED":
        return None
    if not user:
        return TrackingRefused(f"{where} asks for credentials and none are set: set {CREDENTIALS}")
    if not password:
        return TrackingRefused(
            f"{where} refused user {user!r}: no password is set: set {CREDENTIALS}"
        )
    return TrackingRefused(
        f"{where} refused the password of user {user!r}: set the right one in {CREDENTIALS}"
    )


def outage_limit_s() -> float:
    text = os.environ.get(OUTAGE_ENV, str(OUTAGE_DEFAULT_S))
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise TrackingError(f"${OUTAGE_ENV} must be a number of seconds > 0, got {text!r}")
    return value


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Opening a fresh SQLite store creates and migrates its tables, and processes that do it
    at once collide; they take turns on a lock file beside the database."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def client() -> MlflowClient:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    with _store_lock(uri):
        return MlflowClient(uri)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """These environment variables for the block, then back as they were."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fail_fast() -> contextlib.AbstractContextManager[None]:
    return environment(FAIL_FAST)


def _artifact_root(uri: str) -> str | None:
    """Local stores keep artifacts beside the database; servers choose their own."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    return (db.parent.resolve() / "artifacts").as_uri()


# The UI's "Model training" view (runs, their metrics and models) rather than its GenAI one.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(name: str) -> str:
    """Get or create the experiment, tolerating a worker that creates it at the same moment."""
    c = client()
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = _artifact_root(tracking_uri())
    try:
        return c.create_experiment(
            name, artifact_location=root and f"{root}/{name}", tags=EXPERIMENT_TAGS
        )
    except MlflowException:
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def get_run(run_id: str) -> mlflow.entities.Run:
    try:
        return client().get_run(run_id)
    except MlflowException as e:
        raise refusal(e) or TrackingError(
            f"no MLflow run with id {run_id!r} in {tracking_uri()}; "
            "list runs with `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`"
        ) from None


@contextlib.contextmanager
def downloaded_checkpoint(run_id: str, name: str = "last.pt") -> Iterator[Path]:
    """checkpoints/<name> of a run, in a temp folder removed on exit; local and server stores."""
    get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="fashion-lab-resume-") as dst:
        try:
            path = client().download_artifacts(run_id, f"checkpoints/{name}", dst)
        except (MlflowException, OSError):
            raise TrackingError(
                f"run {run_id} has no checkpoints/{name}: it never finished an epoch, "
                "or ran with --no-checkpoint; start a new run instead"
            ) from None
        yield Path(path)


def run_name(cfg: Config) -> str:
    return cfg.run_name or f"{cfg.model}-{cfg.optimizer}-lr{cfg.lr:.0e}-bs{cfg.batch_size}"


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
