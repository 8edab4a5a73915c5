"""The one module that talks to MLflow. The training loop only sees a callback."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from data_utils import normalize
from experiments import plots
from experiments.config import Config, to_dict, to_yaml

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
# Inferring requirements costs 4-9 s per log_model call; these are what loading the model needs.
MODEL_REQUIREMENTS = ["torch==2.14.1", "mlflow==3.17.2"]
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


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


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
def _fail_fast() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in FAIL_FAST}
    os.environ.update(FAIL_FAST)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _artifact_root(uri: str) -> str | None:
    """Local stores keep artifacts beside the database; servers choose their own."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    return (db.parent.resolve() / "artifacts").as_uri()


def experiment_id(name: str) -> str:
    """Get or create the experiment, tolerating a worker that creates it at the same moment."""
    c = client()
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    root = _artifact_root(tracking_uri())
    try:
        return c.create_experiment(name, artifact_location=root and f"{root}/{name}")
    except MlflowException:
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def get_run(run_id: str) -> mlflow.entities.Run:
    try:
        return client().get_run(run_id)
    except MlflowException:
        raise TrackingError(
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


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


class Outbox:
    """What the tracking store has not taken yet, in order. A send that fails stays queued and
    is tried again at the next flush, so training never waits for the store."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.pending: dict[str, Callable[[], None]] = {}
        self.down_since: float | None = None
        self.error = ""

    def put(self, key: str, send: Callable[[], None]) -> None:
        """Queue a send; a later one under the same key replaces it (a newer last.pt)."""
        self.pending.pop(key, None)
        self.pending[key] = send

    def flush(self) -> bool:
        """Send what is pending, oldest first; False if the store failed to take it all."""
        try:
            with _fail_fast():
                while self.pending:
                    key = next(iter(self.pending))
                    self.pending[key]()
                    del self.pending[key]
        except (MlflowException, OSError) as e:
            self.error = _first_line(e)
            if self.down_since is None:
                self.down_since = time.monotonic()
                print(
                    f"tracking: {tracking_uri()} failed ({self.error}); training goes on, and "
                    f"what it could not send is kept and sent again for up to "
                    f"{self.limit_s:.0f} s",
                    flush=True,
                )
            return False
        if self.down_since is not None:
            down = time.monotonic() - self.down_since
            print(f"tracking: {tracking_uri()} answers again after {down:.0f} s; "
                  "all that was held back is sent", flush=True)  # fmt: skip
            self.down_since = None
        return True

    def expired(self) -> bool:
        return self.down_since is not None and time.monotonic() - self.down_since > self.limit_s


class MlflowCallback:
    """Logs one training run: params, metrics per epoch, checkpoints, plots and the model.

    New run: created at train start (after config and data are checked). Resume: attaches to
    run_id and skips every (metric, step) already recorded, so each epoch's metrics land once.
    Everything sent during training goes through an outbox: while the store does not answer,
    training goes on and the outbox keeps what is not sent, up to the outage limit.
    """

    def __init__(
        self,
        cfg: Config,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        log_model: bool = True,
    ) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self.tags = dict(tags or {})
        self.log_model = log_model
        self.client = client()
        self._logged: set[tuple[str, int]] = set()
        self._attached = run_id is not None
        self._outbox = Outbox(outage_limit_s())
        self._sends = 0
        self._last_checkpoint: Path | None = None

    def on_start(self, dataset_md5: str, extra_params: Mapping[str, Any]) -> None:
        if self.run_id is None:
            tags = {
                "git_commit": git_commit(),
                "dataset_md5": dataset_md5,
                "mlflow.runName": run_name(self.cfg),
                **self.tags,
            }
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            run = self.client.create_run(experiment_id(self.cfg.experiment_name), tags=tags)
            self.run_id = run.info.run_id
            params = {**to_dict(self.cfg), **extra_params}
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
            self.client.log_text(self.run_id, to_yaml(self.cfg), "config.yaml")
        else:
            run = self.client.get_run(self.run_id)
            self.client.update_run(self.run_id, status="RUNNING")
            for key in ("error", "stop_reason"):  # of the stop this resume undoes
                if key in run.data.tags:
                    self.client.delete_tag(self.run_id, key)
            # Params cannot change: a run extended with --epochs says so in a tag.
            if run.data.params.get("epochs", str(self.cfg.epochs)) != str(self.cfg.epochs):
                self.client.set_tag(self.run_id, "epochs_extended_to", str(self.cfg.epochs))
                self.client.log_text(self.run_id, to_yaml(self.cfg), "config.yaml")
            self._logged = {
                (m.key, m.step)
                for key in run.data.metrics
                for m in self.client.get_metric_history(self.run_id, key)
            }
        # Printed at once, so whoever kills this process knows what to --resume.
        print(f"mlflow_run_id: {self.run_id}", flush=True)

    def on_resume(
        self, history: list[dict[str, float]], train_losses: list[tuple[int, float]]
    ) -> None:
        """Whatever of the checkpoint's epochs never reached its run goes now. A new run that
        starts from another run's checkpoint (a retried trial) holds only its own epochs."""
        if not self._attached:
            return
        points = [("train_loss", v, s) for s, v in train_losses]
        points += [(k, v, i + 1) for i, metrics in enumerate(history) for k, v in metrics.items()]
        self.log_metrics(points)

    def log_metrics(self, points: Iterable[tuple[str, float, int]]) -> None:
        """Batched (key, value, step) points; skips repeats after a resume. Each point keeps
        the timestamp of its first try, so a retry can never record it twice."""
        now = int(time.time() * 1000)
        fresh = [Metric(k, float(v), now, s) for k, v, s in points if (k, s) not in self._logged]
        self._logged.update((m.key, m.step) for m in fresh)
        for i in range(0, len(fresh), 1000):  # MLflow's per-call limit
            batch = fresh[i : i + 1000]
            self._put(f"metrics-{self._sends}", lambda b=batch: self._log_batch(b))
        self._send()

    def _log_batch(self, metrics: list[Metric]) -> None:
        self.client.log_batch(self.run_id, metrics=metrics)

    def _put(self, key: str, send: Callable[[], None]) -> None:
        self._sends += 1
        self._outbox.put(key, send)

    def _send(self) -> None:
        """Flush the outbox; past the outage limit, stop the run (TrackingOutage)."""
        if not self._outbox.flush() and self._outbox.expired():
            raise self._give_up()

    def _drain(self) -> None:
        """At the end there is no training left to go on with: wait for the store."""
        while not self._outbox.flush():
            if self._outbox.expired():
                raise self._give_up()
            time.sleep(min(5.0, self._outbox.limit_s / 5))

    def _give_up(self) -> TrackingOutage:
        """Keep the last checkpoint where --resume finds it, naming this run; say how to go on."""
        out = self._outbox
        head = (
            f"tracking store {tracking_uri()} has failed for "
            f"{time.monotonic() - (out.down_since or 0):.0f} s (limit {out.limit_s:.0f} s, "
            f"${OUTAGE_ENV}): {out.error}. Run {self.run_id} stopped"
        )
        out.pending.clear()
        if self._last_checkpoint is None or not self._last_checkpoint.exists():
            return TrackingOutage(f"{head} before its first checkpoint; start it again")
        keep = Path("mlruns", "unsent", str(self.run_id)).resolve()
        keep.mkdir(parents=True, exist_ok=True)
        state = torch.load(self._last_checkpoint, map_location="cpu", weights_only=True)
        state["mlflow_run_id"] = self.run_id
        torch.save(state, keep / "last.pt.tmp")
        os.replace(keep / "last.pt.tmp", keep / "last.pt")
        return TrackingOutage(
            f"{head} after epoch {state['epoch']}; its last checkpoint is {keep / 'last.pt'}. "
            f"Once the store answers, continue it with: python train.py --resume {keep / 'last.pt'}"
        )

    def on_epoch_end(
        self, epoch: int, metrics: Mapping[str, float], train_losses: Iterable[tuple[int, float]]
    ) -> None:
        points = [("train_loss", v, s) for s, v in train_losses]
        points += [(k, v, epoch) for k, v in metrics.items()]
        self.log_metrics(points)

    def on_checkpoint(self, path: Path) -> None:
        if path.name == "last.pt":
            self._last_checkpoint = path
        log = self.client.log_artifact
        self._put(f"checkpoint-{path.name}", lambda: log(self.run_id, str(path), "checkpoints"))
        self._send()

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def on_end(self, result: Any) -> None:
        """result is train.TrainResult: final metrics, plots, the best model, then FINISHED.
        The final metrics sit at step = epochs, so a run extended later keeps both. A result
        without a test pass (a study's trial) gets best_val_accuracy alone: no plots, no model."""
        step = result.cfg.epochs
        points = []
        if result.best_val_accuracy is not None:
            points.append(("best_val_accuracy", result.best_val_accuracy, step))
        if result.test_logits is not None:
            per_class = plots.per_class_accuracy(result.test_logits, result.test_labels)
            points += [("test_accuracy", result.test_accuracy, step),
                       ("test_loss", result.test_loss, step)]  # fmt: skip
            points += [
                (f"test_accuracy_class_{plots.class_slug(k)}", v, step)
                for k, v in per_class.items()
            ]
        self.log_metrics(points)
        with tempfile.TemporaryDirectory(prefix="fashion-lab-plots-") as tmp:
            if result.test_logits is not None:
                plots.run_plots(result, Path(tmp))
                self._put("plots", lambda: self.log_artifacts(Path(tmp), "plots"))
            if self.log_model:
                # A copy: the caller's model stays on its device, in its memory format and mode.
                model = copy.deepcopy(result.model)
                model = model.to("cpu", memory_format=torch.contiguous_format).eval()
                example = normalize(result.test_images[:2].unsqueeze(1)).numpy()
                self._put("model", lambda: self._log_model(model, example))
            self._put("status", lambda: self.client.set_terminated(self.run_id, "FINISHED"))
            self._drain()

    def _log_model(self, model: torch.nn.Module, example: Any) -> None:
        with mlflow.start_run(run_id=self.run_id):
            mlflow.pytorch.log_model(
                model, name="model", input_example=example, pip_requirements=MODEL_REQUIREMENTS
            )

    def on_error(self, status: str, reason: str, tags: Mapping[str, Any] | None = None) -> None:
        """status is an MLflow run status: FAILED for errors (tag error), KILLED for pruning,
        Ctrl-C and SIGTERM (tag stop_reason). One try: the process is ending."""
        if self.run_id is None or self._outbox.expired():
            return
        all_tags = {"error" if status == "FAILED" else "stop_reason": reason[:5000], **(tags or {})}
        self._put("tags", lambda: self.set_tags(all_tags))
        self._put("status", lambda: self.client.set_terminated(self.run_id, status))
        if not self._outbox.flush():
            print(f"tracking: run {self.run_id} could not be marked {status}", flush=True)


# ---------------------------------------------------------------------------------------------
# Studies (tune.py): one parent run per Optuna study, one child run per trial.

TRIAL_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def check_store(experiment_name: str) -> str:
    """The experiment id, or TrackingError: a study should not start against a broken store."""
    try:
        return experiment_id(experiment_name)
    except MlflowException as e:
        raise TrackingError(f"MLflow tracking store {tracking_uri()} is unusable: {e}") from None


def start_study_run(
    experiment_name: str, study_name: str, params: Mapping[str, Any], files: Mapping[str, str]
) -> str:
    """The study's parent run: its settings as params, its base config and space as files."""
    c = client()
    tags = {"optuna_study": study_name, "git_commit": git_commit(),
            "mlflow.runName": f"study-{study_name}"}  # fmt: skip
    run_id = c.create_run(experiment_id(experiment_name), tags=tags).info.run_id
    c.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    for path, text in files.items():
        c.log_text(run_id, text, path)
    return run_id


def reopen_run(run_id: str) -> None:
    """A resumed or joined study's parent runs again until its launcher finishes."""
    if get_run(run_id).info.status != "RUNNING":
        client().update_run(run_id, status="RUNNING")


def end_run(run_id: str, status: str) -> None:
    client().set_terminated(run_id, status)


def end_trial_run(run_id: str, state: str, reason: str = "") -> None:
    """Mirror a trial state on its run: COMPLETE, PRUNED, FAIL -> FINISHED, KILLED, FAILED."""
    c = client()
    c.set_tag(run_id, "optuna_state", state)
    if reason:
        c.set_tag(run_id, "optuna_reason", reason[:5000])
    c.set_terminated(run_id, TRIAL_STATUS[state])


def log_study_best(
    parent_run_id: str, trial_number: int, value: float, params: Mapping[str, Any], run_id: str
) -> None:
    """best_val_accuracy with step = trial number, so the parent charts the study's progress."""
    c = client()
    now = int(time.time() * 1000)
    tags = {"best_trial": str(trial_number), "best_run_id": run_id}
    tags |= {f"best_{k}": str(v) for k, v in params.items()}
    c.log_batch(
        parent_run_id,
        metrics=[Metric("best_val_accuracy", float(value), now, trial_number)],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


def log_folder(run_id: str, folder: Path) -> None:
    client().log_artifacts(run_id, str(folder))


def log_text(run_id: str, text: str, path: str) -> None:
    client().log_text(run_id, text, path)


def log_retrain(parent_run_id: str, run_id: str, test_accuracy: float) -> None:
    c = client()
    c.set_tag(parent_run_id, "retrain_run_id", run_id)
    c.log_metric(parent_run_id, "retrain_test_accuracy", test_accuracy)


def delete_trial_checkpoints(parent_run_id: str, experiment_name: str, trials: set[int]) -> None:
    """Delete checkpoints/ of the parent's child runs for these trial numbers, once each."""
    if not trials:
        return
    c = client()
    children = c.search_runs(
        [experiment_id(experiment_name)],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=50000,
    )
    for run in children:
        tags = run.data.tags
        if tags.get("checkpoints") == "deleted" or tags.get("optuna_trial_number") is None:
            continue
        if int(tags["optuna_trial_number"]) in trials:
            repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=tracking_uri())
            # Workers sweep after every trial they finish; two may delete one folder at once.
            with contextlib.suppress(FileNotFoundError):
                repo.delete_artifacts("checkpoints")
            c.set_tag(run.info.run_id, "checkpoints", "deleted")
