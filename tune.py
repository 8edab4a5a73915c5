"""Optuna studies over the training engine: one trial is one `train()` call, one MLflow child run.

The launching process checks every input, creates the study and its MLflow parent run, queues
--n-trials WAITING trials, then runs its workers. A worker claims queued trials one at a time
until none are left, so the study's total is exact however many workers, processes or machines
share it. Heartbeats mark a dead worker's trial FAIL; it is re-queued and resumes from the
checkpoint its MLflow run holds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")  # headless: study plots are files on the parent run

import matplotlib.pyplot as plt
import optuna
import sqlalchemy
import torch
import yaml
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, Trial, TrialState
from optuna.visualization import matplotlib as ovm

from data_utils import DataError
from experiments import plots
from experiments.config import (
    FIELDS,
    Config,
    ConfigError,
    add_config_flags,
    apply,
    load_config,
    to_dict,
    validate,
)
from train import (
    CHOICES,
    Callback,
    CheckpointError,
    DivergenceError,
    StopRun,
    Terminated,
    dataset,
    failure_reason,
    load_checkpoint,
    stop_cause,
    stop_exit_code,
    stop_on_sigterm,
    train,
)

SAMPLERS = ("tpe", "random", "qmc", "gp", "nsgaii")
PRUNERS = ("median", "hyperband", "none")
# Settings that name a machine's own resources: nodes of one study may differ in these.
PER_MACHINE = ("device", "threads", "data_dir")
# Tracking settings are not hyperparameters; a trial's run name is its number.
NOT_SEARCHABLE = ("run_name", "experiment_name", *PER_MACHINE)
MAX_RETRIES = 3

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)

EPILOG = """\
trial checkpoints:
  Every trial writes checkpoints/last.pt and best.pt to its MLflow run (--no-checkpoint turns
  them off), so a re-queued trial resumes instead of starting over. Once a trial is PRUNED, or
  COMPLETE but not the study's best, its checkpoints are deleted from the artifact store; a
  trial that stops being the best loses them then. FAIL trials keep theirs until the study has
  nothing left to run, since a re-queued retry resumes from them. --keep-checkpoints keeps all.

stops:
  Ctrl-C or SIGTERM fails the running trial and re-queues it at once (exit 130, 143); rerunning
  the command resumes it from its checkpoint. A trial is never pruned after its last epoch. One
  that runs out of GPU memory fails for good, and the worker goes on with the next.

many machines:
  Run the same command on every node with --storage postgresql://user:pw@host/db and
  MLFLOW_TRACKING_URI=http://host:port. The first launcher creates the study and its parent run;
  the others join them. A node that dies is noticed after --grace-period seconds and its trial
  is re-queued. Rerunning the command resumes the study; a larger --n-trials extends it.
"""


# ---------------------------------------------------------------------------------------------
# Search space: a YAML mapping of Config field -> distribution, checked against the base config


@dataclass(frozen=True)
class Param:
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


SPEC_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
SPACE_EXAMPLE = "lr: {type: float, low: 1.0e-4, high: 0.3, log: true}"


def load_space(path: str | Path, base: Config) -> dict[str, Param]:
    """Read and check a search space; every endpoint and choice must make base a valid config."""
    p = Path(path)
    where = f"search space {p}"
    if not p.is_file():
        raise ConfigError(f"{where} does not exist; see experiments/spaces/default.yaml")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {e}") from None
    if not raw:
        raise ConfigError(
            f"{where} is empty; it needs at least one parameter, e.g. {SPACE_EXAMPLE}"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must map config fields to distributions, e.g. {SPACE_EXAMPLE}")
    return {
        str(name): _param(f"{where}: {name}", str(name), spec, base) for name, spec in raw.items()
    }


def _param(where: str, name: str, spec: Any, base: Config) -> Param:
    if name not in FIELDS:
        raise ConfigError(f"{where}: not a config field; allowed: {', '.join(FIELDS)}")
    if name in NOT_SEARCHABLE:
        raise ConfigError(f"{where}: a tracking or machine setting, not a hyperparameter")
    if not isinstance(spec, dict) or spec.get("type") not in SPEC_KEYS:
        raise ConfigError(
            f"{where}: needs a mapping with type: float, int or categorical, e.g. {SPACE_EXAMPLE}"
        )
    kind, field_type = spec["type"], FIELDS[name].type
    extra = sorted(set(spec) - SPEC_KEYS[kind])
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)} for type {kind}")

    def value(v: Any, what: str) -> Any:
        """The value as the field's type, checked by the same rules as any config."""
        try:
            return getattr(validate(apply(base, {name: v}, where), CHOICES), name)
        except ConfigError as e:
            raise ConfigError(f"{where}: {what} {v!r} gives an invalid config: {e}") from None

    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        if any(isinstance(c, (list, dict)) or c is None for c in choices):
            raise ConfigError(f"{where}: choices must be plain values, got {choices!r}")
        coerced = tuple(value(c, "choice") for c in choices)
        if len(set(coerced)) < len(coerced):
            raise ConfigError(f"{where}: choices repeat a value: {choices!r}")
        return Param(kind, choices=coerced)

    if field_type != kind:
        raise ConfigError(
            f"{where}: the field is {field_type}, so use type {field_type} or categorical"
        )
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: type {kind} needs low and high")
    low, high = value(spec["low"], "low"), value(spec["high"], "high")
    if not low < high:
        raise ConfigError(f"{where}: low must be < high, got low={low!r} high={high!r}")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {low!r}")
    if step is not None:
        if log:
            raise ConfigError(f"{where}: step and log: true cannot be combined")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ConfigError(f"{where}: step must be a number > 0, got {step!r}")
        if kind == "int" and not float(step).is_integer():
            raise ConfigError(f"{where}: step must be an integer for type int, got {step!r}")
    return Param(kind, low=low, high=high, log=log, step=step)


def suggest(trial: optuna.trial.BaseTrial, space: Mapping[str, Param]) -> dict[str, Any]:
    """One value per parameter. A re-queued trial already holds its params; Optuna returns them."""
    out = {}
    for name, p in space.items():
        if p.kind == "categorical":
            out[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.kind == "int":
            out[name] = trial.suggest_int(name, p.low, p.high, step=int(p.step or 1), log=p.log)
        else:
            out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return out


# ---------------------------------------------------------------------------------------------
# Storage, sampler, pruner


def open_storage(
    url: str, heartbeat: int, grace: int, on_stale: Callable[[optuna.Study, FrozenTrial], None]
) -> RDBStorage:
    """An RDB storage with heartbeats, or ConfigError naming the URL (password hidden)."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        # Unparsed, so SQLAlchemy cannot hide the password: mask what stands in user:password@.
        masked = re.sub(r"(://[^/:@]*:).*@", r"\1***@", url)
        raise ConfigError(f"--storage {masked!r} is not a database URL; {STORAGE_HINT}") from None
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
                    url, engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
                    heartbeat_interval=heartbeat, grace_period=grace,
                    heartbeat_stale_trial_callback=on_stale,
                )  # fmt: skip
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
    raise ConfigError(f"--storage {shown} cannot be opened: {first}; {STORAGE_HINT}")


STORAGE_HINT = "use sqlite:///path/optuna.db or postgresql://user:password@host:5432/db"


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


def make_sampler(name: str, seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    # Optuna's 10 random startup trials would be most of a small CPU study: model sooner.
    startup = max(3, min(10, n_trials // 3))
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(scramble=True, seed=seed, warn_asynchronous_seeding=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.NSGAIISampler(seed=seed)


def make_pruner(name: str, prune_from: int, startup: int, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=prune_from)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=prune_from, max_resource=epochs)
    return optuna.pruners.NopPruner()


# ---------------------------------------------------------------------------------------------
# The study: created once, then joined by every launcher and worker


@dataclass
class Study:
    """What every worker of one study shares. Built the same way in launchers and workers."""

    args: argparse.Namespace
    base: Config
    space: dict[str, Param]
    storage: RDBStorage
    tracking: ModuleType  # experiments.tracking, imported late: mlflow costs seconds
    parent_run_id: str = ""

    def load(self, sampler_seed: int | None = None) -> optuna.Study:
        # A fresh Study per trial: its trial cache is then current, and the sampler can be
        # seeded by trial number, so N workers do not draw the same startup points.
        seed = self.base.seed if sampler_seed is None else sampler_seed
        a = self.args
        return optuna.load_study(
            study_name=a.study_name, storage=self.storage,
            sampler=make_sampler(a.sampler, seed, a.n_trials),
            pruner=make_pruner(a.pruner, a.prune_from_epoch, a.pruner_startup_trials,
                               self.base.epochs),
        )  # fmt: skip

    def claim_lock(self) -> contextlib.AbstractContextManager:
        """SQLite ignores SELECT ... FOR UPDATE, so two local workers could both move one trial
        to RUNNING; PostgreSQL or MySQL lock the row themselves."""
        return sqlite_lock(self.args.storage, "claim-lock")

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a second launcher to join: the space and the base config."""
        cfg = {k: v for k, v in to_dict(self.base).items() if k not in PER_MACHINE}
        fp = {"base_config": cfg, "space": {k: asdict(p) for k, p in self.space.items()}}
        return json.loads(json.dumps(fp))  # as the storage returns it: tuples become lists


def create_or_join(st: Study) -> optuna.Study:
    """Create the study, its parent run and its queue; or join one that another launcher made."""
    a = st.args
    try:
        study = optuna.create_study(
            study_name=a.study_name, storage=st.storage, direction="maximize"
        )
    except optuna.exceptions.DuplicatedStudyError:
        return join(st)
    fp = st.fingerprint()
    st.parent_run_id = st.tracking.start_study_run(
        st.base.experiment_name, a.study_name,
        params={"sampler": a.sampler, "pruner": a.pruner, "space": a.space,
                "config": a.config or "", "seed": st.base.seed},
        files={"base_config.yaml": yaml.safe_dump(fp["base_config"], sort_keys=False),
               "space.yaml": yaml.safe_dump(fp["space"], sort_keys=False)},
    )  # fmt: skip
    study.set_user_attr("mlflow_parent_run_id", st.parent_run_id)
    for key, value in fp.items():
        study.set_user_attr(key, value)
    enqueue(study, a.n_trials)
    # Written last: joiners wait for it, so they never see a study without its queue.
    study.set_user_attr("n_trials", a.n_trials)
    return study


def join(st: Study) -> optuna.Study:
    a = st.args
    study = st.load()
    deadline = time.monotonic() + 60
    while "n_trials" not in study.user_attrs:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"study {a.study_name!r} exists but its launcher never finished setting it up; "
                f"delete it (optuna delete-study --study-name {a.study_name} --storage URL) "
                "or pick another --study-name"
            )
        time.sleep(1)
        study = st.load()
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {a.study_name!r} minimizes; pick another --study-name")
    attrs, fp = study.user_attrs, st.fingerprint()
    diff = [k for k in fp["base_config"] if attrs["base_config"].get(k) != fp["base_config"][k]]
    if attrs["space"] != fp["space"]:
        diff.append("the search space")
    if diff:
        raise ConfigError(
            f"study {a.study_name!r} was started with another --config/--space (differs in "
            f"{', '.join(diff)}); use the same files and flags on every node, or a new --study-name"
        )
    st.parent_run_id = attrs["mlflow_parent_run_id"]
    st.tracking.reopen_run(st.parent_run_id)
    if a.n_trials > attrs["n_trials"]:
        enqueue(study, a.n_trials - attrs["n_trials"])
        study.set_user_attr("n_trials", a.n_trials)
    elif a.n_trials < attrs["n_trials"]:
        print(f"note: study {a.study_name} keeps its budget of {attrs['n_trials']} trials; "
              f"--n-trials {a.n_trials} cannot shrink it")  # fmt: skip
    return study


def enqueue(study: optuna.Study, n: int) -> None:
    # An empty enqueue fixes no params: the sampler still chooses them when a worker claims it.
    for _ in range(n):
        study.enqueue_trial({})


def counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    out = {s.name: 0 for s in TrialState}
    for t in trials:
        out[t.state.name] += 1
    return out


def retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that were re-queued: their retry stands in for them."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


# ---------------------------------------------------------------------------------------------
# One trial


class Claimed(NamedTuple):
    study: optuna.Study  # loaded for this trial, its sampler seeded by the trial number
    trial: Trial
    queued: FrozenTrial  # as queued: a retry's attrs name the trial and run it continues
    trial_id: int


class TrialReporter(Callback):
    """Optuna's side of a trial: its run id (for retries), per-epoch reports and pruning."""

    def __init__(self, trial: Trial, logger: Any, pruner: str, epochs: int) -> None:
        self.trial, self.logger, self.pruner, self.epochs = trial, logger, pruner, epochs

    def on_start(self, dataset_md5: str, extra_params: dict[str, Any]) -> None:
        self.trial.set_user_attr("mlflow_run_id", self.logger.run_id)
        # A metric, not just a param, so MLflow's charts can plot any metric against it.
        self.logger.log_metrics([("trial_number", self.trial.number, 0)])

    def on_epoch_end(
        self, epoch: int, metrics: dict[str, float], train_losses: list[tuple[int, float]]
    ) -> None:
        value = metrics["val_accuracy"]
        self.trial.report(value, epoch)
        self.trial.set_user_attr("epochs_run", epoch)  # how far it got, for the study's tables
        # After the last epoch the compute is spent: the trial's result counts in full.
        if epoch < self.epochs and self.trial.should_prune():
            raise StopRun(
                f"pruned by the {self.pruner} pruner at epoch {epoch} (val_accuracy {value:.4f})",
                {"pruned_at_epoch": epoch},
            )


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


class Worker:
    """Claims queued trials one at a time and runs each as one train() call."""

    def __init__(self, st: Study, name: str) -> None:
        self.st, self.tracking, self.name = st, st.tracking, name

    def run(self, timeout: float | None) -> None:
        deadline = time.monotonic() + timeout if timeout else math.inf
        st = self.st
        print(f"{self.name}: joined study {st.args.study_name} (pid {os.getpid()})", flush=True)
        while time.monotonic() < deadline:
            optuna.storages.fail_stale_trials(st.load())
            claimed = self.claim()
            if claimed is not None:
                self.run_trial(claimed)
                continue
            if not st.load().get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return
            # Trials still run elsewhere; one may die and come back as a retry to take on.
            time.sleep(st.args.heartbeat_interval)

    def claim(self) -> Claimed | None:
        """Move one WAITING trial to RUNNING, atomically across processes and machines."""
        st, storage = self.st, self.st.storage
        study_id = storage.get_study_id_from_name(st.args.study_name)
        with st.claim_lock():
            for t in storage.get_all_trials(study_id, states=(TrialState.WAITING,)):
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
                try:
                    if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                        break
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue
            else:
                return None
        storage.record_heartbeat(trial_id)
        study = st.load(sampler_seed=st.base.seed + t.number)
        # Trial() skips ask(), which reads the study's trials into Optuna's storage cache; a
        # sampler that never reads them (random) would then meet an unknown trial id.
        study.get_trials(deepcopy=False)
        return Claimed(study, Trial(study, trial_id), t, trial_id)

    def run_trial(self, claimed: Claimed) -> None:
        st, (study, trial, queued, trial_id) = self.st, claimed
        n, logger, cfg = trial.number, None, None
        state, value, reason = TrialState.FAIL, None, ""
        with self.heartbeat(trial_id):
            try:
                params = suggest(trial, st.space)
                cfg = apply(st.base, {**params, "run_name": f"trial-{n:03d}"}, f"trial {n}")
                cfg = validate(cfg, CHOICES)
                resume, tags = self.resume_point(trial, queued, cfg)
                logger = self.tracking.MlflowCallback(
                    cfg, parent_run_id=st.parent_run_id, log_model=False,
                    tags={"optuna_study": st.args.study_name, "optuna_trial_number": str(n),
                          "optuna_state": "RUNNING", **tags},
                )  # fmt: skip
                print(f"{self.name}: trial {n} starts: {fmt_params(params)}", flush=True)
                reporter = TrialReporter(trial, logger, st.args.pruner, cfg.epochs)
                result = train(cfg, [logger, reporter], resume=resume, test=st.args.trial_test)
                state, value = TrialState.COMPLETE, result.best_val_accuracy
            except StopRun as e:
                state, reason = TrialState.PRUNED, str(e)
            except DivergenceError as e:
                # Pruned, not failed: samplers learn from pruned trials and ignore failed ones.
                state, reason = TrialState.PRUNED, f"diverged: {e}"
            except KeyboardInterrupt as e:
                # A second Ctrl-C or SIGTERM must not cut this bookkeeping short; the process
                # is ending.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                reason = f"{stop_cause(e)}; re-queued to resume when the study is rerun"
                self.finish(study, trial, TrialState.FAIL, None, reason, logger)
                requeue(study, st.storage.get_trial(trial_id))
                raise
            except Exception as e:  # any other error ends this trial only; the study goes on
                # FAIL, never re-queued: an out-of-memory trial would fail the same way again.
                reason = failure_reason(cfg, e) if cfg else f"{type(e).__name__}: {e}"
                traceback.print_exc()
            self.finish(study, trial, state, value, reason, logger)
        # What a failed trial's traceback kept alive, and the cache it held on the GPU, go
        # before the next trial claims the memory.
        gc.collect()
        torch.cuda.empty_cache()

    def resume_point(
        self, trial: Trial, queued: FrozenTrial, cfg: Config
    ) -> tuple[dict | None, dict[str, str]]:
        """For a re-queued trial: the newest checkpoint of the runs it continues, if it fits."""
        history = queued.system_attrs.get("retry_history", [])
        if not history:
            return None, {}
        tags = {"retry_of_trial": str(history[-1])}
        # Its own predecessor's run first; if that died before an epoch, the run it resumed.
        sources = [
            queued.user_attrs.get("mlflow_run_id"),
            queued.user_attrs.get("resumed_from_run"),
        ]
        for run_id in filter(None, sources):
            try:
                with self.tracking.downloaded_checkpoint(run_id) as path:
                    state = load_checkpoint(path)
            except (self.tracking.TrackingError, CheckpointError) as e:
                print(f"{self.name}: trial {trial.number} starts over: {e}")
                continue
            mine = {k: v for k, v in to_dict(cfg).items() if k not in ("run_name", *PER_MACHINE)}
            if any(state["config"].get(k) != v for k, v in mine.items()):
                print(f"{self.name}: trial {trial.number}: {run_id} holds another config")
                continue
            trial.set_user_attr("resumed_from_run", run_id)
            print(f"{self.name}: trial {trial.number} resumes {run_id} at epoch {state['epoch']}")
            return state, {**tags, "resumed_from_run": run_id,
                           "resumed_from_epoch": str(state["epoch"])}  # fmt: skip
        return None, tags

    def finish(
        self, study: optuna.Study, trial: Trial, state: TrialState, value: float | None,
        reason: str, logger: Any,
    ) -> None:  # fmt: skip
        """The trial's state goes to Optuna first (the truth), then to its MLflow run."""
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
        try:
            self.record(study, trial, state, value, reason, logger)
        except Exception:  # Optuna holds the result; a tracking hiccup must not end the worker
            traceback.print_exc()
            print(
                f"{self.name}: warning: trial {trial.number} is {state.name} in the study, but "
                "recording it in MLflow failed (above); the study goes on", file=sys.stderr,
            )  # fmt: skip

    def record(
        self, study: optuna.Study, trial: Trial, state: TrialState, value: float | None,
        reason: str, logger: Any,
    ) -> None:  # fmt: skip
        """The trial's MLflow run, the study's best and the checkpoint sweep."""
        run_id = logger.run_id if logger is not None else None
        if run_id:
            self.tracking.end_trial_run(run_id, state.name, reason)
        line = f"{self.name}: trial {trial.number} {state.name}"
        print(line + (f": val_accuracy {value:.4f}" if value is not None else f": {reason}"))
        trials = study.get_trials(deepcopy=False)
        best = best_trial(trials)
        if state == TrialState.COMPLETE and best is not None and best.number == trial.number:
            print(f"{self.name}: trial {trial.number} is the new best")
            self.tracking.log_study_best(
                self.st.parent_run_id, trial.number, value, trial.params, run_id or ""
            )
        if not self.st.args.keep_checkpoints:
            sweep_checkpoints(self.st, trials, final=False)

    @contextlib.contextmanager
    def heartbeat(self, trial_id: int) -> Iterator[None]:
        """Beat in a thread, so a long epoch never looks like a dead worker."""
        stop = threading.Event()
        interval = self.st.args.heartbeat_interval

        def beat() -> None:
            while not stop.wait(interval):
                try:
                    self.st.storage.record_heartbeat(trial_id)
                except Exception as e:  # a database blip; the next beat may get through
                    print(f"{self.name}: heartbeat failed: {e}", file=sys.stderr)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number), default=None)


def sweep_checkpoints(st: Study, trials: Sequence[FrozenTrial], final: bool) -> None:
    """Delete checkpoints no retry needs and no best trial owns (see EPILOG)."""
    best = best_trial(trials)
    states = {TrialState.PRUNED, TrialState.COMPLETE} | ({TrialState.FAIL} if final else set())
    doomed = {t.number for t in trials if t.state in states and t is not best}
    # A FAIL trial's retry resumes from its checkpoint, even at the end if it is still queued.
    doomed -= retried([t for t in trials if not t.state.is_finished()])
    st.tracking.delete_trial_checkpoints(st.parent_run_id, st.base.experiment_name, doomed)


def fmt_params(params: Mapping[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


# ---------------------------------------------------------------------------------------------
# The launcher: workers, then the summary, the best config and the retrain


def visible_gpus() -> list[str]:
    """CUDA_VISIBLE_DEVICES entries if set, else every GPU torch sees; ids as the variable takes."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def launch_workers(st: Study, argv: Sequence[str], n: int, gpus: list[str]) -> int:
    """N copies of this script as workers, each pinned to one GPU when there are GPUs."""
    cpus = len(os.sched_getaffinity(0))
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    for i in range(n):
        env = {**os.environ, "TQDM_DISABLE": "1"}  # N interleaved progress bars help nobody
        extra = ["--worker-index", str(i)]
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        elif st.base.threads == 0:
            extra += ["--threads", str(max(1, cpus // n))]  # share the cores, don't fight
        # Own session: Ctrl-C reaches the launcher only, which passes it on exactly once.
        proc = subprocess.Popen(
            [sys.executable, __file__, *argv, *extra], env=env, stdout=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        pumps.append(threading.Thread(target=_pump, args=(proc, f"[w{i}] "), daemon=True))
        pumps[-1].start()
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt as e:
        sig = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)
        for p in procs:
            p.wait()
        raise
    finally:
        for t in pumps:
            t.join()
    failed = [f"w{i}: exit {c}" for i, c in enumerate(codes) if c]
    if failed:
        print(
            f"error: workers failed ({', '.join(failed)}); see their output above", file=sys.stderr
        )
        return 1
    return 0


def _pump(proc: subprocess.Popen, prefix: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        print(prefix + line, end="", flush=True)


def summarize(st: Study, top: int) -> FrozenTrial | None:
    trials = st.load().get_trials(deepcopy=False)
    best = best_trial(trials)
    done = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: (-t.value, t.number),
    )
    rows = [
        [str(t.number), t.state.name, f"{t.value:.4f}", fmt_params(t.params),
         t.user_attrs.get("mlflow_run_id", "")]
        for t in done[:top]
    ]  # fmt: skip
    header = ["trial", "state", "val_acc", "params", "mlflow run"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    if rows:
        print(f"\ntop {len(rows)} trials of study {st.args.study_name}:")
        for r in [header, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    else:
        print(f"\nno trial of study {st.args.study_name} has completed")
    c = counts(trials)
    stand_ins = len(retried(trials))
    print(
        f"trials: {len(trials) - stand_ins} counted (budget {st.load().user_attrs['n_trials']}): "
        f"{c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL'] - stand_ins} failed, "
        f"{c['RUNNING']} running, {c['WAITING']} waiting; "
        f"{stand_ins} re-queued after a crash or Ctrl-C"
    )
    if best is not None:
        print(f"best_trial: {best.number}")
        print(f"best_val_accuracy: {best.value:.4f}")
    return best


OPTUNA_PLOTS = {
    "optimization_history": ovm.plot_optimization_history,
    "param_importances": ovm.plot_param_importances,
    "parallel_coordinate": ovm.plot_parallel_coordinate,
}


def log_study_artifacts(st: Study, study: optuna.Study) -> None:
    """Optuna's own views, our seaborn views and trials.csv, on the parent run."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        df = study.trials_dataframe()
        plots.write_trials_csv(df, folder / "trials.csv")
        plots.study_plots(df, folder / "plots")
        for name, draw in OPTUNA_PLOTS.items():
            try:
                ax = draw(study)
            except (ValueError, RuntimeError) as e:  # too few finished trials for this view
                print(f"plots/{name}.png skipped: {e}")
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(10, 6)
            fig.tight_layout()
            fig.savefig(folder / "plots" / f"{name}.png", dpi=100)
            plt.close(fig)
        st.tracking.log_folder(st.parent_run_id, folder)


def best_config(st: Study, best: FrozenTrial) -> Config:
    return validate(
        apply(st.base, {**best.params, "run_name": ""}, f"trial {best.number}"), CHOICES
    )


def write_best(st: Study, best: FrozenTrial, cfg: Config) -> Path:
    """The best config as an experiment file: what differs from the defaults, plus the model
    and every searched field, so a later change of defaults cannot change what it trains."""
    defaults = to_dict(Config())
    keep = {"model", *best.params}
    body = {
        k: v for k, v in to_dict(cfg).items()
        if (k in keep or v != defaults[k]) and k not in PER_MACHINE
    }  # fmt: skip
    out = Path(st.args.output_dir or f"mlruns/studies/{st.args.study_name}") / "best.yaml"
    text = (
        f"# Best of Optuna study {st.args.study_name!r}: trial {best.number}, "
        f"val_accuracy {best.value:.4f} (MLflow parent run {st.parent_run_id}).\n"
        f"# Retrain on all 60k: python train.py --config {out} --val-size 0 --train-subset 0\n"
        + yaml.safe_dump(body, sort_keys=False)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    st.tracking.log_text(st.parent_run_id, text, "best.yaml")
    return out


def retrain(st: Study, best: FrozenTrial, cfg: Config) -> int:
    full = {"val_size": 0, "train_subset": 0, "run_name": f"{st.args.study_name}-best-retrain"}
    cfg = apply(cfg, full, "--retrain-best")
    logger = st.tracking.MlflowCallback(
        cfg, tags={"optuna_study": st.args.study_name, "optuna_parent_run_id": st.parent_run_id,
                   "optuna_best_trial": str(best.number)},
    )  # fmt: skip
    print(f"\nretraining trial {best.number}'s config on all 60k training images")
    try:
        result = train(cfg, [logger])
    except DivergenceError as e:
        print(f"error: retrain run {logger.run_id} diverged: {e}", file=sys.stderr)
        return 1
    st.tracking.log_retrain(st.parent_run_id, logger.run_id, result.test_accuracy)
    print(f"retrain_run_id: {logger.run_id}")
    print(f"test_accuracy: {result.test_accuracy:.4f}")
    return 0


# ---------------------------------------------------------------------------------------------
# CLI


def _at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _gpu_list(text: str) -> list[str]:
    gpus = [g.strip() for g in text.split(",")]
    if not all(gpus):
        raise argparse.ArgumentTypeError(f"expected ids like 0,1,3, got {text!r}")
    return gpus


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults on every line, except None and False, whose help says what happens instead."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tune.py",
        description="Run an Optuna study over the training engine. Each trial is an MLflow child "
        "run under one parent run per study (tracking URI: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlruns/mlflow.db). The objective is best val_accuracy, maximized.",
        epilog=EPILOG,
        formatter_class=lambda prog: HelpFormatter(prog, width=100),
    )
    # fmt: off
    add = parser.add_argument_group("study").add_argument
    add("--config", metavar="YAML", default=None,
        help="base experiment file: the fixed settings every trial starts from "
        "(default: none, so Config's defaults)")
    add("--space", metavar="YAML", default="experiments/spaces/default.yaml",
        help="search space: config field -> {type: float|int|categorical, low, high, log, step, "
        "choices}")
    add("--study-name", metavar="NAME", default="fashion-lab",
        help="an existing study of this name is resumed, or joined from another machine")
    add("--storage", metavar="URL", default="sqlite:///mlruns/optuna.db",
        help="Optuna RDB storage; postgresql://... lets many machines share one study")
    add("--n-trials", metavar="N", type=_at_least(1), default=20,
        help="total trials of the study, over all workers and machines; rerunning with a larger "
        "N extends the study")
    add("--timeout", type=_seconds, metavar="SECONDS", default=None,
        help="start no new trial after this long; running ones finish (default: no limit)")
    add("--sampler", choices=SAMPLERS, default="tpe",
        help="tpe and gp learn from past trials (after a third of --n-trials, 3 to 10, drawn at "
        "random), random and qmc don't, nsgaii is genetic; seeded by --seed plus the trial number")
    add("--pruner", choices=PRUNERS, default="median",
        help="stops trials whose val_accuracy, reported every epoch, lags the others")
    add("--prune-from-epoch", metavar="EPOCH", type=_at_least(1), default=1,
        help="first epoch at which a trial may be pruned (hyperband: its min resource)")
    add("--pruner-startup-trials", metavar="N", type=_at_least(0), default=4,
        help="median pruner: trials that must complete before it prunes any")
    add("--top", metavar="N", type=_at_least(1), default=10,
        help="rows in the final table of best trials")
    add("--output-dir", metavar="DIR", default=None,
        help="where best.yaml is written (default: mlruns/studies/NAME)")
    add("--retrain-best", action="store_true",
        help="then train the best config on all 60k training images and report its test "
        "accuracy (default: off; best.yaml shows the command)")
    add("--keep-checkpoints", action="store_true",
        help="keep every trial's checkpoints (default: off, see 'trial checkpoints' below)")
    add("--trial-test", action="store_true",
        help="score every trial on the test set too, with its plots (default: off; a trial is "
        "ranked on val accuracy alone, and --retrain-best tests the winner)")

    add = parser.add_argument_group("workers").add_argument
    add("--workers", metavar="N", type=_at_least(1), default=None,
        help="worker processes on this machine (default: one per --gpus entry or visible GPU, "
        "else 1)")
    add("--gpus", type=_gpu_list, metavar="IDS", default=None,
        help="comma-separated CUDA_VISIBLE_DEVICES ids; workers are pinned to them round-robin "
        "(default: every visible GPU)")
    add("--heartbeat-interval", type=_at_least(1), metavar="SECONDS", default=10,
        help="how often a running trial tells the storage it is alive")
    add("--grace-period", type=_at_least(2), metavar="SECONDS", default=60,
        help="a trial silent this long is failed and re-queued to resume from its checkpoint")
    add("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    # fmt: on
    add_config_flags(parser, CHOICES)
    return parser


def setup(args: argparse.Namespace, tracking: ModuleType) -> Study:
    """Check every input and open the storage; nothing is created in Optuna or MLflow yet."""
    if args.grace_period <= args.heartbeat_interval:
        raise ConfigError(
            f"--grace-period ({args.grace_period}s) must exceed --heartbeat-interval "
            f"({args.heartbeat_interval}s), or live trials would look dead"
        )
    overrides = {k: v for k, v in vars(args).items() if k in FIELDS}
    base = validate(load_config(args.config, overrides), CHOICES)
    if base.val_size == 0:
        raise ConfigError("val_size: a study needs a validation split to score trials; got 0")
    space = load_space(args.space, base)
    tracking.outage_limit_s()  # a bad limit in the environment: say so before any trial runs
    name = "tune" if args.worker_index is None else f"w{args.worker_index}"
    on_stale = StaleTrials(tracking, args.grace_period, name)
    storage = open_storage(args.storage, args.heartbeat_interval, args.grace_period, on_stale)
    return Study(args, base, space, storage, tracking)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    from experiments import tracking  # importing mlflow costs seconds; --help should not wait

    try:
        st = setup(args, tracking)
        if args.worker_index is not None:
            st.parent_run_id = st.load().user_attrs["mlflow_parent_run_id"]
            return run_worker(Worker(st, f"w{args.worker_index}"), args.timeout)
        dataset(st.base.data_dir)  # missing or corrupt data: say so before creating anything
        tracking.check_store(st.base.experiment_name)
        create_or_join(st)
    except (ConfigError, DataError, tracking.TrackingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"study: {args.study_name}")
    print(f"parent_run_id: {st.parent_run_id}")
    gpus = args.gpus if args.gpus is not None else visible_gpus()
    n_workers = args.workers or max(1, len(gpus))
    code, status = 0, "FINISHED"
    try:
        if n_workers == 1 and args.gpus is None:
            Worker(st, "tune").run(args.timeout)
        else:
            code = launch_workers(st, argv, n_workers, gpus)
            status = "FINISHED" if code == 0 else "FAILED"
    except KeyboardInterrupt as e:
        code, status = stop_exit_code(e), "KILLED"
        print(f"\n{stop_cause(e)}: rerun the same command to resume the study", file=sys.stderr)
    return finish_study(st, code, status)


def run_worker(worker: Worker, timeout: float | None) -> int:
    try:
        worker.run(timeout)
    except KeyboardInterrupt as e:
        return stop_exit_code(e)
    return 0


def finish_study(st: Study, code: int, status: str) -> int:
    """Summary, checkpoint sweep, best.yaml, optional retrain; then the parent run ends."""
    best = summarize(st, st.args.top)
    study = st.load()
    log_study_artifacts(st, study)
    trials = study.get_trials(deepcopy=False)
    if not st.args.keep_checkpoints and all(t.state.is_finished() for t in trials):
        sweep_checkpoints(st, trials, final=True)
    if best is not None:
        # Workers that finished together may have tagged the parent out of order; settle it.
        st.tracking.log_study_best(
            st.parent_run_id, best.number, best.value, best.params,
            best.user_attrs.get("mlflow_run_id", ""),
        )  # fmt: skip
        cfg = best_config(st, best)
        print(f"best_config: {write_best(st, best, cfg)}")
        if st.args.retrain_best and code == 0:
            code = retrain(st, best, cfg)
    st.tracking.end_run(st.parent_run_id, status)
    return code


if __name__ == "__main__":
    sys.exit(main())
