"""A study over its life, as real tune.py processes on FashionMNIST slices: launched, extended,
interrupted, joined by a worker that dies, retrained; and what happens to trial checkpoints.

Trials are tutorial_cnn at width 8 on 1024 images for 1-2 epochs, so each takes seconds. One
study serves the tests of a launch that is extended and retrained (the module fixture below).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from conftest import FAST, call_main, printed, run_ids, start
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

import tune
from experiments import tracking
from experiments.config import Config, load_config, to_dict
from experiments.tuning.report import summarize
from experiments.tuning.space import suggest
from experiments.tuning.study import create_or_join, setup
from experiments.tuning.worker import Worker
from train import build_parser, config_from_args
from tune import main as tune_main

pytestmark = pytest.mark.slow

# lr 1e-5 learns next to nothing in one epoch, 0.05 a lot: which trial is best is known in
# advance. The one-choice optimizer is a searched field whose value is also the default.
SPACE = """\
lr: {type: categorical, choices: [1.0e-5, 0.05]}
optimizer: {type: categorical, choices: [sgd]}
"""
SLOW_LR, FAST_LR = 1e-5, 0.05


def study_args(tmp: Path, name: str, *extra: str) -> list[str]:
    space = tmp / "space.yaml"
    space.write_text(SPACE)
    return [
        *FAST,
        "--width",
        "8",
        "--storage",
        f"sqlite:///{tmp}/optuna.db",
        "--study-name",
        name,
        "--space",
        str(space),
        "--output-dir",
        str(tmp / "out"),
        "--pruner",
        "none",
        "--sampler",
        "random",
        "--confirm-top",  # seed confirmation has tests of its own; these study the search
        "0",
        "--no-baseline",  # so has the baseline: here every trial is the sampler's
        # Pinned, so the retrain computes as its trials did: with auto, the 8-step trials stay
        # fp32 untimed while the 469-step retrain is timed, and takes bf16 where it wins.
        "--precision",
        "fp32",
        *extra,
    ]


def trials(tmp: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp}/optuna.db").trials


def checkpoints(uri: str, run_id: str) -> list[str]:
    return sorted(a.path for a in MlflowClient(uri).list_artifacts(run_id, "checkpoints"))


BOTH = ["checkpoints/best.pt", "checkpoints/last.pt"]


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def seed_drawing(lrs: list[float]) -> int:
    """A --seed under which trial k draws lrs[k]: with --sampler random, trial k samples from a
    RandomSampler seeded with seed + k, drawn here the same way."""
    for seed in range(100):
        draws = [
            optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed + k))
            .ask()
            .suggest_categorical("lr", [SLOW_LR, FAST_LR])
            for k in range(len(lrs))
        ]
        if draws == lrs:
            return seed
    raise AssertionError(f"no seed below 100 draws {lrs}")


# --- one study: launched, extended, retrained -----------------------------------------------------


@pytest.fixture(scope="module")
def life(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("life")
    uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        seed = seed_drawing([SLOW_LR, FAST_LR])
        base = study_args(tmp, "life", "--epochs", "1", "--seed", str(seed))
        first = ok(call_main(tune_main, *base, "--n-trials", "1"))
        after_first = trials(tmp, "life")
        kept_after_first = checkpoints(uri, after_first[0].user_attrs["mlflow_run_id"])
        extended = ok(call_main(tune_main, *base, "--n-trials", "2"))
        retrained = ok(call_main(tune_main, *base, "--n-trials", "1", "--retrain-best"))
        yield SimpleNamespace(
            tmp=tmp,
            uri=uri,
            base=base,
            first=first,
            after_first=after_first,
            kept_after_first=kept_after_first,
            extended=extended,
            retrained=retrained,
            trials=trials(tmp, "life"),
            parent=printed(first, "parent_run_id"),
        )


def test_the_first_trial_is_the_best_and_keeps_its_checkpoints(life):
    (only,) = life.after_first
    assert only.state == TrialState.COMPLETE and only.params["lr"] == SLOW_LR
    assert "tune: trial 0 is the new best" in life.first
    assert life.kept_after_first == BOTH


def test_a_larger_n_trials_extends_the_study(life):
    assert printed(life.extended, "parent_run_id") == life.parent  # the same study, rejoined
    assert life.extended.count(" starts: ") == 1  # only the added trial
    assert "trials: 2 counted (budget 2): 2 complete" in life.extended
    assert [t.state for t in life.trials] == [TrialState.COMPLETE] * 2
    assert [t.params["lr"] for t in life.trials] == [SLOW_LR, FAST_LR]


def test_a_trial_that_stops_being_the_best_loses_its_checkpoints(life):
    old, new = life.trials
    assert new.value > old.value
    assert "tune: trial 1 is the new best" in life.extended
    old_run = old.user_attrs["mlflow_run_id"]
    assert checkpoints(life.uri, old_run) == []
    assert MlflowClient(life.uri).get_run(old_run).data.tags["checkpoints"] == "deleted"
    assert checkpoints(life.uri, new.user_attrs["mlflow_run_id"]) == BOTH


def test_a_smaller_n_trials_says_so_and_runs_nothing(life):
    assert "note: study life keeps its budget of 2 trials; --n-trials 1 cannot shrink it" in (
        life.retrained
    )
    assert " starts: " not in life.retrained
    assert len(life.trials) == 2


def test_retrain_best_trains_the_best_config_on_all_60k_images(life):
    assert "retraining trial 1's config on all 60k training images" in life.retrained
    c = MlflowClient(life.uri)
    parent = c.get_run(life.parent)
    retrain_id = printed(life.retrained, "retrain_run_id")
    assert parent.data.tags["retrain_run_id"] == retrain_id
    assert parent.info.status == "FINISHED"
    run = c.get_run(retrain_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "life-best-retrain"
    assert run.data.tags["optuna_best_trial"] == "1"
    assert parent.data.metrics["retrain_test_accuracy"] == run.data.metrics["test_accuracy"]
    assert float(printed(life.retrained, "test_accuracy")) == pytest.approx(
        run.data.metrics["test_accuracy"], abs=5e-5
    )
    # The best trial's config with the validation split and the subset given back to training.
    best = c.get_run(life.trials[1].user_attrs["mlflow_run_id"]).data.params
    differ = {k for k in best if best[k] != run.data.params.get(k)}
    assert differ == {"val_size", "train_subset", "run_name"}
    assert (run.data.params["val_size"], run.data.params["train_subset"]) == ("0", "0")


def test_retrain_best_registers_its_model_ranked_by_the_best_trials_val_accuracy(life):
    champion = MlflowClient(life.uri).get_model_version_by_alias("fashion-lab", "champion")
    assert champion.run_id == printed(life.retrained, "retrain_run_id")
    why = (
        f"val {life.trials[1].value:.4f} (one run): no champion before it "
        "(trial 1 of study life, retrained on all 60k images)"
    )
    assert champion.description == why
    assert f"registered: fashion-lab v1 @champion: {why}" in life.retrained


def test_best_yaml_pins_the_model_and_every_searched_field(life):
    path = Path(printed(life.retrained, "best_config"))
    body = yaml.safe_load(path.read_text())
    # Pinned even where the value is today's default, so a new default cannot change it.
    assert body["model"] == "tutorial_cnn" and body["lr"] == FAST_LR
    assert body["optimizer"] == "sgd" == Config().optimizer
    # `train.py --config best.yaml` builds the best trial's config (as its run logged it).
    cfg = config_from_args(build_parser().parse_args(["--config", str(path)]))
    logged = MlflowClient(life.uri).download_artifacts(
        life.trials[1].user_attrs["mlflow_run_id"], "config.yaml", str(life.tmp)
    )
    want = to_dict(load_config(logged))
    assert {**to_dict(cfg), "run_name": want["run_name"]} == want


@pytest.mark.parametrize(
    ("change", "says"),
    [(["--epochs", "2"], "differs in epochs"), (["--width", "4"], "differs in width")],
)
def test_another_base_config_for_the_study_exits_2(life, capsys, change, says):
    before = run_ids(life.uri)
    assert tune.main([*life.base, "--n-trials", "2", *change]) == 2
    err = capsys.readouterr().err
    assert "error: study 'life' was started with another --config/--space" in err and says in err
    assert run_ids(life.uri) == before
    assert len(trials(life.tmp, "life")) == 2


def test_another_space_for_the_study_exits_2(life, capsys, tmp_path):
    other = tmp_path / "space.yaml"
    other.write_text(SPACE.replace("1.0e-5", "1.0e-4"))
    assert tune.main([*life.base, "--n-trials", "2", "--space", str(other)]) == 2
    err = capsys.readouterr().err
    assert "started with another --config/--space (differs in the search space)" in err
    assert len(trials(life.tmp, "life")) == 2


# --- interrupted, re-queued, retried -----------------------------------------------------------


def lines_until(proc: subprocess.Popen, pattern: str, then: Callable[[re.Match], object]) -> str:
    """Read a process's stdout, calling then(match) at the first line matching pattern."""
    seen, done = [], False
    for line in proc.stdout:
        seen.append(line)
        if not done and (m := re.match(pattern, line)):
            then(m)
            done = True
    out, err = proc.communicate(timeout=300)
    return "".join(seen) + out + err


def test_a_retry_whose_checkpoint_holds_another_config_starts_over(store, tmp_path):
    args = study_args(tmp_path, "ctrl-c", "--n-trials", "1", "--epochs", "2")
    proc = start("tune.py", *args)
    out = lines_until(proc, r"epoch 1/2", lambda m: proc.send_signal(signal.SIGINT))
    assert proc.returncode == 130, out
    dead, retry = trials(tmp_path, "ctrl-c")
    assert dead.state == TrialState.FAIL and retry.state == TrialState.WAITING
    dead_run = dead.user_attrs["mlflow_run_id"]
    c = MlflowClient(store)
    assert c.get_run(printed(out, "parent_run_id")).info.status == "KILLED"
    # A FAIL trial keeps its checkpoints while its retry waits to resume from them.
    assert checkpoints(store, dead_run) == BOTH

    # The checkpoint now says it was trained with another lr: resuming it would be wrong.
    state = torch.load(c.download_artifacts(dead_run, "checkpoints/last.pt", str(tmp_path)))
    state["config"]["lr"] *= 2
    (tmp_path / "other").mkdir()
    torch.save(state, tmp_path / "other" / "last.pt")
    c.log_artifact(dead_run, str(tmp_path / "other" / "last.pt"), "checkpoints")

    again = ok(call_main(tune_main, *args))
    assert f"tune: trial 1: {dead_run} holds another config" in again
    assert " resumes " not in again
    retry = trials(tmp_path, "ctrl-c")[1]
    assert retry.state == TrialState.COMPLETE
    run = c.get_run(retry.user_attrs["mlflow_run_id"])
    assert run.data.tags["retry_of_trial"] == "0" and "resumed_from_run" not in run.data.tags
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "val_accuracy")]
    assert steps == [1, 2]  # trained from the start
    # With nothing left to run, the FAIL trial's checkpoints go too.
    assert checkpoints(store, dead_run) == []


def test_a_trial_is_retried_at_most_three_times(store, tmp_path, capsys):
    """Four workers die in turn holding the study's one trial: three retries, then none."""
    argv = study_args(
        tmp_path, "limit", "--n-trials", "1", "--heartbeat-interval", "1", "--grace-period", "2"
    )
    st = setup(tune.build_parser().parse_args(argv), tracking)
    create_or_join(st)
    worker = Worker(st, "w")
    for _ in range(4):
        claimed = worker.claim()
        assert claimed is not None
        suggest(claimed.trial, st.space, st.base)
        # The worker dies here: its trial's heartbeat stops until another worker notices.
        deadline = time.monotonic() + 60
        while st.storage.get_trial(claimed.trial_id).state == TrialState.RUNNING:
            assert time.monotonic() < deadline, "the dead worker's trial never went stale"
            time.sleep(0.5)
            optuna.storages.fail_stale_trials(st.load())
    assert worker.claim() is None
    done = trials(tmp_path, "limit")
    assert [t.state for t in done] == [TrialState.FAIL] * 4
    assert [t.system_attrs.get("retry_history", []) for t in done] == [[], [0], [0, 1], [0, 1, 2]]
    assert all(t.params == done[0].params for t in done)  # every retry is the same trial
    capsys.readouterr()
    summarize(st, st.load(), top=5)
    assert (
        "trials: 1 counted (budget 1): 0 complete, 0 pruned, 1 failed, 0 running, 0 waiting; "
        "3 re-queued after a crash or Ctrl-C" in capsys.readouterr().out
    )


# --- several workers --------------------------------------------------------------------------


def test_a_live_worker_resumes_a_dead_workers_trial_and_the_launcher_fails(store, tmp_path):
    args = study_args(
        tmp_path,
        "crash",
        "--n-trials",
        "2",
        "--epochs",
        "2",
        "--workers",
        "2",
        "--gpus",
        "3,5",
        "--heartbeat-interval",
        "1",
        "--grace-period",
        "2",
        "--keep-checkpoints",
    )
    proc = start("tune.py", *args)
    pids, gpus, victim = {}, {}, []
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if m := re.match(r"\[(w\d)\] w\d: joined study crash \(pid (\d+)\)", line):
            pids[m[1]] = int(m[2])
            # What the worker itself was started with, read while it runs.
            env = Path(f"/proc/{m[2]}/environ").read_bytes().split(b"\0")
            gpus[m[1]] = [e.decode() for e in env if e.startswith(b"CUDA_VISIBLE_DEVICES=")]
        if not victim and (m := re.match(r"\[(w\d)\] epoch 1/2", line)):
            victim.append(m[1])
            os.kill(pids[m[1]], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    out = "".join(seen) + out
    assert gpus == {"w0": ["CUDA_VISIBLE_DEVICES=3"], "w1": ["CUDA_VISIBLE_DEVICES=5"]}

    # The launcher reports the crash, fails the parent, and still sums up the study.
    assert proc.returncode == 1, out + err
    assert f"error: workers failed ({victim[0]}: exit -9)" in err
    c = MlflowClient(store)
    assert c.get_run(printed(out, "parent_run_id")).info.status == "FAILED"

    done = trials(tmp_path, "crash")
    dead = next(t for t in done if t.state == TrialState.FAIL)
    retry = next(t for t in done if t.system_attrs.get("failed_trial") == dead.number)
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert sorted(t.state.name for t in done) == ["COMPLETE", "COMPLETE", "FAIL"]
    survivor = ({"w0", "w1"} - set(victim)).pop()
    dead_run = dead.user_attrs["mlflow_run_id"]
    assert f"[{survivor}] {survivor}: trial {retry.number} resumes {dead_run} at epoch 1" in out
    assert "no heartbeat" in c.get_run(dead_run).data.tags["optuna_reason"]
    resumed = retry.user_attrs["mlflow_run_id"]
    assert [m.step for m in c.get_metric_history(resumed, "val_accuracy")] == [2]
    # --keep-checkpoints: the dead trial's, the retry's and the other trial's all stay.
    kept = {t.number: checkpoints(store, t.user_attrs["mlflow_run_id"]) for t in done}
    assert all("checkpoints/last.pt" in k for k in kept.values()), kept


def test_timeout_starts_no_trial_after_it_and_no_checkpoint_writes_none(store, tmp_path):
    # The worker claims its first trial at once, within the 50 ms; claiming it and training
    # an epoch take longer than that, so the second never starts.
    args = study_args(
        tmp_path,
        "timeout",
        "--n-trials",
        "2",
        "--epochs",
        "1",
        "--timeout",
        "0.05",
        "--no-checkpoint",
    )
    out = ok(call_main(tune_main, *args))
    assert out.count(" starts: ") == 1
    assert "1 complete, 0 pruned, 0 failed, 0 running, 1 waiting" in out
    first, waiting = trials(tmp_path, "timeout")
    assert first.state == TrialState.COMPLETE and waiting.state == TrialState.WAITING
    assert checkpoints(store, first.user_attrs["mlflow_run_id"]) == []
    assert MlflowClient(store).get_run(printed(out, "parent_run_id")).info.status == "FINISHED"
