"""One study, created once and then joined by every launcher and worker, on any machine."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import optuna
import yaml
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from experiments.config import (
    Config,
    ConfigError,
    apply,
    flag_overrides,
    load_config,
    to_dict,
    validate,
)
from experiments.tuning.space import PER_MACHINE, Param, base_params, enqueued_params, load_space
from experiments.tuning.storage import (
    StaleTrials,
    make_pruner,
    make_sampler,
    open_storage,
    run_percent,
    sqlite_lock,
    storage_lock,
)


@dataclass
class StudyContext:
    """What every worker of one study shares. Built the same way in launchers and workers."""

    args: argparse.Namespace
    base: Config
    space: dict[str, Param]
    storage: RDBStorage
    tracking: ModuleType  # experiments.tracking, imported late: mlflow costs seconds
    parent_run_id: str = ""
    # The baseline, then --enqueue's files: (name, the fixed params it gives a trial), run
    # before any sampled trial.
    queued: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def load(self, sampler_seed: int | None = None) -> optuna.Study:
        # A fresh Study per trial: its trial cache is then current, and the sampler can be
        # seeded by trial number, so N workers do not draw the same startup points.
        seed = self.base.seed if sampler_seed is None else sampler_seed
        a = self.args
        return optuna.load_study(
            study_name=a.study_name,
            storage=self.storage,
            sampler=make_sampler(a.sampler, seed, a.n_trials),
            pruner=make_pruner(
                a.pruner,
                run_percent(a.prune_from_epoch, self.base.epochs),
                a.pruner_startup_trials,
                a.reduction_factor,
            ),
        )

    def trial_config(self, trial: FrozenTrial, **changes: Any) -> Config:
        """The config a trial trained, with changes (a run name, a seed)."""
        return validate(apply(self.base, {**trial.params, **changes}, f"trial {trial.number}"))

    def claim_lock(self) -> contextlib.AbstractContextManager:
        """SQLite ignores SELECT ... FOR UPDATE, so two local workers could both move one trial
        to RUNNING; PostgreSQL or MySQL lock the row themselves."""
        return sqlite_lock(self.args.storage, "claim-lock")

    def confirm_lock(self) -> contextlib.AbstractContextManager:
        """One launcher confirms a study's winner at a time, on any machine."""
        return storage_lock(self.storage, self.args.storage, "confirm-lock")

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a second launcher to join: the space and the base config."""
        cfg = {k: v for k, v in to_dict(self.base).items() if k not in PER_MACHINE}
        space = {k: asdict(p) for k, p in self.space.items()}
        for p in space.values():
            if not p["when"]:  # as studies made before conditions existed recorded it
                del p["when"]
        fp = {"base_config": cfg, "space": space}
        return json.loads(json.dumps(fp))  # as the storage returns it: tuples become lists


def create_or_join(st: StudyContext) -> optuna.Study:
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
        st.base.experiment_name,
        a.study_name,
        params={
            "sampler": a.sampler,
            "pruner": a.pruner,
            "space": a.space,
            "config": a.config or "",
            "seed": st.base.seed,
        },
        files={
            "base_config.yaml": yaml.safe_dump(fp["base_config"], sort_keys=False),
            "space.yaml": yaml.safe_dump(fp["space"], sort_keys=False),
        },
    )
    study.set_user_attr("mlflow_parent_run_id", st.parent_run_id)
    for key, value in fp.items():
        study.set_user_attr(key, value)
    enqueue(st, study, a.n_trials)
    # Written last: joiners wait for it, so they never see a study without its queue.
    study.set_user_attr("n_trials", a.n_trials)
    return study


def join(st: StudyContext) -> optuna.Study:
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
    if "stopped" in attrs:
        print(
            f"note: study {a.study_name} stopped ({attrs['stopped']}) and runs no more trials; "
            "to search on, start a new --study-name with --enqueue of its best.yaml"
        )
        return study
    extra = max(a.n_trials - attrs["n_trials"], 0)
    enqueue(st, study, extra)
    if extra:
        study.set_user_attr("n_trials", a.n_trials)
    elif a.n_trials < attrs["n_trials"]:
        print(
            f"note: study {a.study_name} keeps its budget of {attrs['n_trials']} trials; "
            f"--n-trials {a.n_trials} cannot shrink it"
        )
    return study


BASELINE = "the base config"


def is_baseline(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get("enqueued_from") == BASELINE


def enqueue(st: StudyContext, study: optuna.Study, n: int) -> None:
    """Queue n trials: first the baseline and the --enqueue configs the study does not hold yet,
    each with its fixed params (workers claim trials in order, so these run first), then empty
    ones."""
    held = [t.system_attrs.get("fixed_params") for t in study.get_trials(deepcopy=False)]
    new = [(path, params) for path, params in st.queued if params not in held]
    for path, params in new[:n]:
        study.enqueue_trial(params, user_attrs={"enqueued_from": path})
    for path, _ in new[n:]:
        print(
            f"note: --enqueue {path} is not queued: the study has no new trial left for it; "
            "a larger --n-trials makes room"
        )
    # An empty enqueue fixes no params: the sampler still chooses them when a worker claims it.
    for _ in range(n - len(new[:n])):
        study.enqueue_trial({})


def run_share(args: argparse.Namespace, epochs: int) -> float:
    """The share of a full run a trial is expected to cost: sha and hyperband let the best
    1/N of the trials at each rung go on, the other pruners are counted as running in full."""
    if args.pruner not in ("sha", "hyperband"):
        return 1.0
    points = [0, run_percent(args.prune_from_epoch, epochs)]
    while points[-1] < 100:
        points.append(min(points[-1] * args.reduction_factor, 100))
    legs = itertools.pairwise(points)
    return sum((b - a) / args.reduction_factor**i for i, (a, b) in enumerate(legs)) / 100


def plan(st: StudyContext, study: optuna.Study, run_s: float) -> str:
    """What the study has left to run, and about how long that takes here (run_s: one run of
    the base config), for the line tune.py prints before it starts."""
    a, trials = st.args, study.get_trials(deepcopy=False)
    left = [t for t in trials if not t.state.is_finished() and "dropped" not in t.user_attrs]
    full = sum(1 for t in left if is_baseline(t))
    runs = full + (len(left) - full) * run_share(a, st.base.epochs)
    confirm = (a.confirm_top + (0 if a.no_baseline else 1)) * a.seeds if a.confirm_top else 0
    retrain = 60000 / (60000 - st.base.val_size) if a.retrain_best else 0
    total = runs + confirm + retrain
    return (
        f"plan: {len(left)} trial(s) left ({a.pruner} pruner: about {runs:.1f} full runs)"
        + (f", {confirm} confirmation runs" if confirm else "")
        + (", the retrain" if retrain else "")
        + f" (fewer if some are on record): about {total:.0f} runs of the base config, each "
        f"about {clock(run_s)} here, so up to {clock(total * run_s)}; configs larger or longer "
        "than the base take longer"
    )


def clock(seconds: float) -> str:
    """A duration as h:mm:ss."""
    return time.strftime("%H:%M:%S", time.gmtime(seconds)).removeprefix("00:")


def counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    out = {s.name: 0 for s in TrialState}
    for t in trials:
        out[t.state.name] += 1
    return out


def stop_reason(trials: Sequence[FrozenTrial], patience: int) -> str | None:
    """Why the study should stop (no new best in its last `patience` finished trials), or None.
    Trials count in the order they finished; a pruned one never sets a new best."""
    finished = sorted(
        (t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
        key=lambda t: t.datetime_complete,
    )
    best, since = None, 0
    for t in finished:
        if t.state == TrialState.COMPLETE and (best is None or t.value > best.value):
            best, since = t, 0
        else:
            since += 1
    if since < patience:
        return None
    after = f"since trial {best.number}" if best is not None else "since the study began"
    return f"no new best in {since} trial{'s' if since > 1 else ''} {after}"


def stop(storage: RDBStorage, study_id: int, reason: str) -> None:
    """Mark the study stopped, so no worker claims another trial, and its queued trials
    dropped. Optuna can neither delete a trial nor fail one that never ran: they stay WAITING."""
    storage.set_study_user_attr(study_id, "stopped", reason)
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "dropped", reason)


def stop_line(study: optuna.Study) -> str | None:
    """The summary's line for a study that --patience stopped: why, and what it dropped."""
    if "stopped" not in study.user_attrs:
        return None
    dropped = sum(1 for t in study.get_trials(deepcopy=False) if "dropped" in t.user_attrs)
    return (
        f"stopped: {study.user_attrs['stopped']}; {dropped} queued trial"
        f"{'s' if dropped != 1 else ''} dropped (left WAITING, never run)"
    )


def retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that were re-queued: their retry stands in for them."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def setup(args: argparse.Namespace, tracking: ModuleType) -> StudyContext:
    """Check every input and open the storage; nothing is created in Optuna or MLflow yet."""
    if args.grace_period <= args.heartbeat_interval:
        raise ConfigError(
            f"--grace-period ({args.grace_period}s) must exceed --heartbeat-interval "
            f"({args.heartbeat_interval}s), or live trials would look dead"
        )
    base = validate(load_config(args.config, flag_overrides(args)))
    if base.val_size == 0:
        raise ConfigError("val_size: a study needs a validation split to score trials; got 0")
    space = load_space(args.space, base)
    queued: dict[str, tuple[str, dict[str, Any]]] = {}
    given = [] if args.no_baseline else [(BASELINE, base_params(base, space))]
    given += [(path, enqueued_params(path, base, space)) for path in args.enqueue or []]
    for path, params in given:
        queued.setdefault(json.dumps(params, sort_keys=True), (path, params))
    if len(queued) > args.n_trials:
        raise ConfigError(
            f"{'the baseline and ' * (not args.no_baseline)}--enqueue give {len(queued)} "
            f"different configs but --n-trials is {args.n_trials}; they count within the "
            "study's total, so raise --n-trials"
        )
    tracking.outage_limit_s()  # a bad limit in the environment: say so before any trial runs
    name = "tune" if args.worker_index is None else f"w{args.worker_index}"
    on_stale = StaleTrials(tracking, args.grace_period, name)
    storage = open_storage(args.storage, args.heartbeat_interval, args.grace_period, on_stale)
    return StudyContext(args, base, space, storage, tracking, queued=list(queued.values()))
