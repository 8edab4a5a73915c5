"""Smarter searches: conditional parameters in a real study, --enqueue (known configs as the
first trials), --patience (a study that stops improving stops), and their bad input.

Studies run tutorial_cnn at width 8 on 512 images for one epoch, so a trial takes a second or
two; where a test needs no end-of-study summary, its worker runs in this process.
"""

from __future__ import annotations

import contextlib
import datetime
import io
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from conftest import FAST, call_main, run_ids
from helpers import load, study_args, write
from optuna.trial import TrialState

import tune
from experiments import tracking
from experiments.config import Config, ConfigError, apply, validate
from experiments.tuning.space import enqueued_params, load_space
from experiments.tuning.study import create_or_join, setup, stop_reason
from experiments.tuning.worker import Worker
from train import main as train_main
from tune import main as tune_main

TINY = ["--width", "8", "--train-subset", "512", "--epochs", "1", "--pruner", "none"]
CONDITIONAL = """\
optimizer: {type: categorical, choices: [sgd, adam]}
momentum: {type: float, low: 0.5, high: 0.95, when: {optimizer: sgd}}
"""
LR_SPACE = "lr: {type: categorical, choices: [1.0e-5, 0.05]}\n"


def args(tmp: Path, space: str, *extra: str) -> list[str]:
    return [*study_args(tmp), *TINY, "--space", write(tmp, "space.yaml", space), *extra]


def launch(argv: list[str]) -> Worker:
    """What tune.py does before its worker runs: check the input, create or join the study."""
    st = setup(tune.build_parser().parse_args(argv), tracking)
    create_or_join(st)
    return Worker(st, "w0")


# --- conditional parameters ----------------------------------------------------------------------


def test_a_conditional_parameter_is_carried_only_by_the_trials_it_applies_to(store, tmp_path):
    launch(args(tmp_path, CONDITIONAL, "--sampler", "random", "--n-trials", "3")).run(None)
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    by_optimizer = {"sgd": {"optimizer", "momentum"}, "adam": {"optimizer"}}
    for t in trials:
        assert set(t.params) == by_optimizer[t.params["optimizer"]], t.params
    # Drawn for both kinds of trial, or the check above proved nothing.
    assert {t.params["optimizer"] for t in trials} == {"sgd", "adam"}


# --- --enqueue and --patience: one study ---------------------------------------------------------


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """4 trials with patience 1, the first enqueued at lr 0.05. Under --seed 0 the random
    sampler draws lr 0.05 for the next one too: the same config, so the same score, no new
    best, and the study stops after 2 trials. Then the command runs again without --patience,
    in this process up to its worker's first claim."""
    tmp = tmp_path_factory.mktemp("stopped")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlruns/mlflow.db")
        best = write(tmp, "best.yaml", "model: tutorial_cnn\nlr: 0.05\n")
        argv = args(tmp, LR_SPACE, "--n-trials", "4", "--enqueue", best, "--sampler", "random")
        # The stopped study still confirms its winner: the dropped trials will never run.
        first = call_main(tune_main, *argv, "--patience", "1", "--confirm-top", "1", "--seeds", "2")
        after_first = load(tmp).trials
        with contextlib.redirect_stdout(io.StringIO()) as again:
            claimed = launch(argv).claim()
        return SimpleNamespace(
            tmp=tmp,
            best=best,
            first=first,
            after_first=after_first,
            again=again.getvalue(),
            claimed=claimed,
        )


def test_the_enqueued_config_is_the_first_trial(stopped):
    assert stopped.first.returncode == 0, stopped.first.stdout + stopped.first.stderr
    first = stopped.after_first[0]
    assert first.params == {"lr": 0.05}
    assert first.user_attrs["enqueued_from"] == stopped.best
    assert first.state == TrialState.COMPLETE


def test_no_new_best_in_patience_trials_stops_the_study_and_drops_its_queue(stopped):
    trials = stopped.after_first
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.WAITING] * 2
    assert trials[1].params == trials[0].params and trials[1].value == trials[0].value
    reason = "no new best in 1 trial since trial 0"
    assert all(t.user_attrs["dropped"] == reason for t in trials[2:])
    starts = [s for s in stopped.first.stdout.splitlines() if s.startswith("tune: trial ")]
    assert sum(" starts: " in s for s in starts) == 2
    assert f"tune: the study stops: {reason}" in stopped.first.stdout
    assert (
        f"stopped: {reason}; 2 queued trials dropped (left WAITING, never run)"
        in stopped.first.stdout
    )


def test_a_stopped_study_still_confirms_its_winner(stopped):
    out = stopped.first.stdout
    assert "confirmation waits" not in out
    assert "confirmed over 2 fresh seeds" in out and "confirmed_trial: 0" in out


def test_rerunning_a_stopped_study_claims_and_enqueues_nothing(stopped):
    assert "stopped (no new best in 1 trial since trial 0) and runs no more trials" in (
        stopped.again
    )
    assert stopped.claimed is None  # though this worker was not given --patience
    trials = load(stopped.tmp).trials
    assert [(t.number, t.state) for t in trials] == [
        (t.number, t.state) for t in stopped.after_first
    ]


def test_a_rerun_enqueues_a_config_once_and_a_new_one_into_the_extension(store, tmp_path):
    """Creating and joining the study only (no trial runs): what each command queues."""
    old = write(tmp_path, "old.yaml", "lr: 0.05\n")
    new = write(tmp_path, "new.yaml", "lr: 1.0e-5\n")
    other = write(tmp_path, "other.yaml", "lr: 0.05\nmodel: tutorial_cnn\n")  # same as old

    def queue(n: int, *files: str) -> None:
        launch(args(tmp_path, LR_SPACE, "--n-trials", str(n), *(f"--enqueue={f}" for f in files)))

    queue(3, old, other)
    queue(3, old)
    queue(4, old, new)
    queue(4, new)
    fixed = [t.system_attrs["fixed_params"] for t in load(tmp_path).trials]
    assert fixed == [{"lr": 0.05}, {}, {}, {"lr": 1e-5}]


# --- when the study stops -----------------------------------------------------------------------


def finished(*outcomes: tuple[int, float | None]) -> list[optuna.trial.FrozenTrial]:
    """Trials numbered as given, finished in the order given: a value is COMPLETE, None PRUNED."""
    start = datetime.datetime(2026, 1, 1)
    trials = []
    for k, (number, value) in enumerate(outcomes):
        state = TrialState.PRUNED if value is None else TrialState.COMPLETE
        t = optuna.trial.create_trial(state=state, value=value)
        t.number, t.datetime_complete = number, start + datetime.timedelta(minutes=k)
        trials.append(t)
    return trials


def test_patience_counts_finished_trials_since_the_best_in_the_order_they_finished():
    trials = finished((0, 0.5), (1, None), (3, 0.7), (2, 0.7), (4, None), (5, 0.6))
    assert stop_reason(trials, 3) == "no new best in 3 trials since trial 3"  # a tie is no best
    assert stop_reason(trials, 4) is None
    assert stop_reason(finished((0, None), (1, None)), 2) == (
        "no new best in 2 trials since the study began"
    )
    running = optuna.trial.create_trial(state=TrialState.WAITING)
    assert stop_reason([*finished((0, 0.5)), running], 1) is None


def test_patience_stops_only_a_study_with_trials_left_to_drop(store, tmp_path):
    """A worker's check before it claims, on made-up trials: none run here."""
    worker = launch(args(tmp_path, LR_SPACE, "--n-trials", "1", "--patience", "1"))
    for value in 0.5, 0.4:  # trials 1 and 2, while trial 0 waits
        load(tmp_path).add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=value))
    assert worker.claim() is None
    study = load(tmp_path)
    assert study.user_attrs["stopped"] == "no new best in 1 trial since trial 1"
    assert study.trials[0].state == TrialState.WAITING
    assert study.trials[0].user_attrs["dropped"] == study.user_attrs["stopped"]

    ended = tmp_path / "ended"
    ended.mkdir()
    worker = launch(args(ended, LR_SPACE, "--n-trials", "1", "--patience", "1"))
    claimed = worker.claim()
    claimed.study.tell(claimed.trial, 0.5)
    claimed.study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.4))
    assert worker.claim() is None  # nothing left to claim: the budget is spent, not stopped
    assert "stopped" not in load(ended).user_attrs


# --- bad input: exit 2, a clear message, nothing created ---------------------------------------


@pytest.mark.parametrize(
    ("file", "says"),
    [
        (None, "--enqueue nowhere.yaml: config file nowhere.yaml does not exist"),
        ("lr: [0.05\n", "is not valid YAML"),
        ("- lr\n", "must hold a mapping"),
        ("lr: -1\n", "lr: must be > 0"),
        ("lr_max: 1\n", "unknown config key(s) lr_max"),
        ("lr: 0.01\n", "lr: 0.01 is outside the search space (one of 1e-05, 0.05)"),
        ("lr: 0.05\nepochs: 9\n", "epochs: 9 (base: 1) differs from the base config"),
        ("epochs: 1\n", "sets none of the searched parameters (lr)"),
    ],
)
def test_a_bad_enqueue_file_exits_2(store, tmp_path, file, says):
    path = "nowhere.yaml" if file is None else write(tmp_path, "q.yaml", file)
    res = call_main(tune_main, *args(tmp_path, LR_SPACE, "--enqueue", path))
    assert res.returncode == 2, res.stdout + res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "optuna.db").exists() or load_or_none(tmp_path) is None
    assert not Path(store.removeprefix("sqlite:///")).exists() or run_ids(store) == []


def load_or_none(tmp_path: Path) -> optuna.Study | None:
    names = optuna.get_all_study_names(f"sqlite:///{tmp_path}/optuna.db")
    return load(tmp_path) if names else None


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--n-trials", "1", "--enqueue", "A", "--enqueue", "B"], "give 2 different configs"),
        (["--patience", "0"], "--patience: must be >= 1, got 0"),
        (["--space", "CYCLE"], "the conditions form a cycle (optimizer -> nesterov -> optimizer)"),
    ],
)
def test_bad_search_flags_exit_2(store, tmp_path, extra, says):
    files = {
        "A": write(tmp_path, "a.yaml", "lr: 0.05\n"),
        "B": write(tmp_path, "b.yaml", "lr: 1.0e-5\n"),
        "CYCLE": write(
            tmp_path,
            "cycle.yaml",
            "optimizer: {type: categorical, choices: [sgd, adam], when: {nesterov: true}}\n"
            "nesterov: {type: categorical, choices: [true, false], when: {optimizer: sgd}}\n",
        ),
    }
    res = call_main(tune_main, *args(tmp_path, LR_SPACE), *[files.get(a, a) for a in extra])
    assert res.returncode == 2, res.stdout + res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr
    assert not Path(store.removeprefix("sqlite:///")).exists() or run_ids(store) == []


def test_a_head_lr_scale_of_zero_exits_2(store):
    res = call_main(train_main, *FAST, "--head-lr-scale", "0")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "head_lr_scale: must be > 0, got 0.0" in res.stderr


def test_an_enqueued_parameter_that_does_not_apply_is_left_out(tmp_path):
    space = load_space(write(tmp_path, "s.yaml", CONDITIONAL), Config())
    adam = write(tmp_path, "adam.yaml", "optimizer: adam\nmomentum: 0.7\n")
    assert enqueued_params(adam, Config(), space) == {"optimizer": "adam"}
    sgd = write(tmp_path, "sgd.yaml", "optimizer: sgd\nmomentum: 0.7\n")
    assert enqueued_params(sgd, Config(), space) == {"optimizer": "sgd", "momentum": 0.7}
    base = validate(apply(Config(), {"lr": 0.01}, "test"))
    with pytest.raises(ConfigError, match=r"lr: 0.1 \(base: 0.01\) differs from the base config"):
        enqueued_params(write(tmp_path, "lr.yaml", "lr: 0.1\noptimizer: sgd\n"), base, space)
