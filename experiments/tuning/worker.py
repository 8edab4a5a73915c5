"""A worker: claims queued trials one at a time and runs each as one train() call."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, NamedTuple

import optuna
import torch
from optuna.trial import FrozenTrial, Trial, TrialState

from experiments.callbacks import Callback
from experiments.checkpoint import CheckpointError, load_checkpoint
from experiments.config import (
    Config,
    to_dict,
)
from experiments.engine import failure_reason, train
from experiments.stops import DivergenceError, StopRun, stop_cause
from experiments.tuning.space import PER_MACHINE, suggest
from experiments.tuning.storage import requeue, run_percent
from experiments.tuning.study import (
    StudyContext,
    clock,
    is_baseline,
    retried,
    stop,
    stop_reason,
)
from experiments.tuning.text import fmt_params


class Claimed(NamedTuple):
    study: optuna.Study  # loaded for this trial, its sampler seeded by the trial number
    trial: Trial
    queued: FrozenTrial  # as queued: a retry's attrs name the trial and run it continues
    trial_id: int


class Outcome(NamedTuple):
    state: TrialState
    value: float | None = None  # best val accuracy, for COMPLETE
    reason: str = ""  # why, for PRUNED and FAIL


class TrialReporter(Callback):
    """Optuna's side of a trial: its run id (for retries), per-epoch reports and pruning. The
    baseline reports like any trial, so the pruner measures the others against it, but is never
    pruned: the study exists to be compared with it."""

    def __init__(self, trial: Trial, logger: Any, pruner: str, epochs: int, prunable: bool) -> None:
        self.trial, self.logger, self.pruner, self.epochs = trial, logger, pruner, epochs
        self.prunable = prunable

    def on_start(self, dataset_md5: str, extra_params: dict[str, Any]) -> None:
        self.trial.set_user_attr("mlflow_run_id", self.logger.run_id)
        # A metric, not just a param, so MLflow's charts can plot any metric against it.
        self.logger.log_metrics([("trial_number", self.trial.number, 0)])

    def on_epoch_end(
        self, epoch: int, metrics: dict[str, float], train_losses: list[tuple[int, float]]
    ) -> None:
        value = metrics["val_accuracy"]
        self.trial.report(value, run_percent(epoch, self.epochs))
        self.trial.set_user_attr("epochs_run", epoch)  # how far it got, for the study's tables
        # After the last epoch the compute is spent: the trial's result counts in full. The
        # baseline asks too, unheeded: successive halving records a trial's value at a rung
        # when it is asked, and only recorded values are what later trials must beat.
        if epoch < self.epochs and self.trial.should_prune() and self.prunable:
            raise StopRun(
                f"pruned by the {self.pruner} pruner at epoch {epoch} (val_accuracy {value:.4f})",
                {"pruned_at_epoch": epoch},
            )


class Worker:
    """Claims queued trials one at a time and runs each as one train() call."""

    def __init__(self, st: StudyContext, name: str) -> None:
        self.st, self.tracking, self.name = st, st.tracking, name
        self.started = time.monotonic()

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
            waiting = storage.get_all_trials(study_id, states=(TrialState.WAITING,))
            # A study that has run its whole budget ended; it did not stop.
            if waiting and self.stopped(study_id):
                return None
            for t in waiting:
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

    def stopped(self, study_id: int) -> bool:
        """Whether the study has stopped, or --patience stops it now (see study.stop)."""
        storage, patience = self.st.storage, self.st.args.patience
        if "stopped" in storage.get_study_user_attrs(study_id):
            return True
        if patience is None:
            return False
        reason = stop_reason(storage.get_all_trials(study_id, deepcopy=False), patience)
        if reason is None:
            return False
        stop(storage, study_id, reason)
        print(f"{self.name}: the study stops: {reason}", flush=True)
        return True

    def run_trial(self, claimed: Claimed) -> None:
        st, (study, trial, queued, trial_id) = self.st, claimed
        n, logger, cfg = trial.number, None, None
        with self.heartbeat(trial_id):
            try:
                params = suggest(trial, st.space, st.base)
                baseline = is_baseline(queued)
                name = f"trial-{n:03d}" + ("-baseline" if baseline else "")
                cfg = st.trial_config(trial, run_name=name)
                resume, tags = self.resume_point(trial, queued, cfg)
                logger = self.tracking.MlflowCallback(
                    cfg,
                    parent_run_id=st.parent_run_id,
                    log_model=False,
                    tags={
                        "optuna_study": st.args.study_name,
                        "optuna_trial_number": str(n),
                        "optuna_state": "RUNNING",
                        "optuna_baseline": str(baseline).lower(),
                        **tags,
                    },
                )
                what = "the baseline, the base config" if baseline else fmt_params(params)
                print(f"{self.name}: trial {n} starts: {what}", flush=True)
                reporter = TrialReporter(
                    trial, logger, st.args.pruner, cfg.epochs, prunable=not baseline
                )
                result = train(cfg, [logger, reporter], resume=resume, test=st.args.trial_test)
                outcome = Outcome(TrialState.COMPLETE, result.best_val_accuracy)
            except StopRun as e:
                outcome = Outcome(TrialState.PRUNED, reason=str(e))
            except DivergenceError as e:
                # Pruned, not failed: samplers learn from pruned trials and ignore failed ones.
                outcome = Outcome(TrialState.PRUNED, reason=f"diverged: {e}")
            except KeyboardInterrupt as e:
                # A second Ctrl-C or SIGTERM must not cut this bookkeeping short; the process
                # is ending.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                reason = f"{stop_cause(e)}; re-queued to resume when the study is rerun"
                self.finish(study, trial, Outcome(TrialState.FAIL, reason=reason), logger)
                requeue(study, st.storage.get_trial(trial_id))
                raise
            except Exception as e:  # any other error ends this trial only; the study goes on
                # FAIL, never re-queued: an out-of-memory trial would fail the same way again.
                reason = failure_reason(cfg, e) if cfg else f"{type(e).__name__}: {e}"
                outcome = Outcome(TrialState.FAIL, reason=reason)
                traceback.print_exc()
            self.finish(study, trial, outcome, logger)
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
                state = run_checkpoint(self.tracking, run_id, cfg)
            except CheckpointError as e:
                print(f"{self.name}: trial {trial.number}: {e}")
                continue
            trial.set_user_attr("resumed_from_run", run_id)
            print(f"{self.name}: trial {trial.number} resumes {run_id} at epoch {state['epoch']}")
            return state, {
                **tags,
                "resumed_from_run": run_id,
                "resumed_from_epoch": str(state["epoch"]),
            }
        return None, tags

    def finish(self, study: optuna.Study, trial: Trial, outcome: Outcome, logger: Any) -> None:
        """The trial's state goes to Optuna first (the truth), then to its MLflow run."""
        if outcome.state == TrialState.COMPLETE:
            study.tell(trial, outcome.value)
        else:
            study.tell(trial, state=outcome.state)
        try:
            self.record(study, trial, outcome, logger)
        except Exception:  # Optuna holds the result; a tracking hiccup must not end the worker
            traceback.print_exc()
            print(
                f"{self.name}: warning: trial {trial.number} is {outcome.state.name} in the "
                "study, but recording it in MLflow failed (above); the study goes on",
                file=sys.stderr,
            )

    def record(self, study: optuna.Study, trial: Trial, outcome: Outcome, logger: Any) -> None:
        """The trial's MLflow run, the study's best and the checkpoint sweep."""
        state, value, reason = outcome
        run_id = logger.run_id if logger is not None else None
        if run_id:
            self.tracking.end_trial_run(run_id, state.name, reason)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state.is_finished() for t in trials) - len(retried(trials))
        line = f"{self.name}: trial {trial.number} {state.name}"
        line += f": val_accuracy {value:.4f}" if value is not None else f": {reason}"
        budget, elapsed = study.user_attrs["n_trials"], time.monotonic() - self.started
        left = elapsed / done * max(budget - done, 0)  # at the pace so far, all workers' trials
        print(f"{line} [{done} of {budget} trials done, {clock(elapsed)} in, {clock(left)} left]")
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


def run_checkpoint(tracking: ModuleType, run_id: str, cfg: Config) -> dict[str, Any]:
    """The last checkpoint of an MLflow run, if that run trained cfg (its run name and the
    per-machine fields aside); else CheckpointError saying why it cannot be resumed."""
    try:
        with tracking.downloaded_checkpoint(run_id) as path:
            state = load_checkpoint(path)
    except tracking.TrackingError as e:
        raise CheckpointError(str(e)) from None
    mine = {k: v for k, v in to_dict(cfg).items() if k not in ("run_name", *PER_MACHINE)}
    if any(state["config"].get(k) != v for k, v in mine.items()):
        raise CheckpointError(f"{run_id} holds another config")
    return state


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number), default=None)


def sweep_checkpoints(st: StudyContext, trials: Sequence[FrozenTrial], final: bool) -> None:
    """Delete checkpoints no retry needs and no best trial owns (see EPILOG)."""
    best = best_trial(trials)
    states = {TrialState.PRUNED, TrialState.COMPLETE} | ({TrialState.FAIL} if final else set())
    doomed = {t.number for t in trials if t.state in states and t is not best}
    # A FAIL trial's retry resumes from its checkpoint, even at the end if it is still queued.
    doomed -= retried([t for t in trials if not t.state.is_finished()])
    st.tracking.delete_trial_checkpoints(st.parent_run_id, st.base.experiment_name, doomed)
