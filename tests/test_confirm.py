"""Seed confirmation (tune.py --confirm-top K --seeds N): its statistics against values worked
out here by hand, a real study that confirms its two best configs, one killed halfway through
its confirmation and rerun, and bad flags.

Studies train tutorial_cnn at width 8 on 512 images for 1-2 epochs, so each run takes seconds.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from conftest import call_main, printed, run_ids, start
from helpers import children, load, study_args, write
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from experiments.stats import gain, mean_ci, welch_p
from experiments.tuning.confirm import fresh_seeds, rank, top_configs, verdict
from tune import main as tune_main

# --- the statistics ------------------------------------------------------------------------------


def test_mean_ci_is_the_t_interval_of_the_mean():
    values = [0.80, 0.82, 0.81, 0.83, 0.79]
    # Sample sd by its definition; t(0.975, 4 df) = 2.7764 from a printed t table.
    sd = math.sqrt(sum((v - 0.81) ** 2 for v in values) / 4)
    half = 2.7764 * sd / math.sqrt(5)
    mean, low, high = mean_ci(values)
    assert mean == pytest.approx(0.81)
    assert (low, high) == pytest.approx((0.81 - half, 0.81 + half), abs=1e-5)
    # Two seeds: t(0.975, 1 df) = 12.706.
    assert mean_ci([0.5, 0.6])[2] == pytest.approx(
        0.55 + 12.706 * math.sqrt(0.005) / math.sqrt(2), abs=1e-4
    )
    assert mean_ci([0.7, 0.7]) == (0.7, 0.7, 0.7)
    with pytest.raises(ValueError, match="needs 2 values"):
        mean_ci([0.7])


def welch_by_hand(a: list[float], b: list[float]) -> float:
    """Welch's t and Welch-Satterthwaite df from their formulas; the two-sided p as twice the
    t density's tail, integrated numerically."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = abs(np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    x = np.linspace(t, t + 2000, 2_000_001)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(x**2 / df))
    return 2 * float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(x)))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.81, 0.83, 0.82, 0.84, 0.80], [0.78, 0.79, 0.77, 0.80, 0.76]),  # clearly apart
        ([0.81, 0.83, 0.82], [0.80, 0.84, 0.79, 0.83]),  # within noise, unequal sizes
        ([0.90, 0.91], [0.70, 0.95, 0.40]),  # very unequal spreads
    ],
)
def test_welch_p_matches_the_formula(a, b):
    assert welch_p(a, b) == pytest.approx(welch_by_hand(a, b), rel=1e-3)


def test_welch_p_of_two_identical_constants_is_nan():
    assert math.isnan(welch_p([0.5, 0.5], [0.5, 0.5]))


def trials(values: list[float], lrs: list[float]) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(direction="maximize")
    for v, lr in zip(values, lrs, strict=True):
        study.add_trial(
            create_trial(
                params={"lr": lr},
                distributions={"lr": FloatDistribution(1e-4, 1.0)},
                value=v,
                state=TrialState.COMPLETE,
            )
        )
    study.add_trial(create_trial(state=TrialState.PRUNED))
    return study.trials


def test_top_configs_are_complete_with_distinct_params_however_few():
    ts = trials([0.80, 0.85, 0.83, 0.84], [0.1, 0.05, 0.05, 0.01])
    # Trial 2 drew trial 1's config again: one config, kept by its best trial.
    assert [t.number for t in top_configs(ts, 3)] == [1, 3, 0]
    assert [t.number for t in top_configs(ts, 2)] == [1, 3]
    assert [t.number for t in top_configs(ts, 9)] == [1, 3, 0]  # fewer than K: what exists


def test_rank_orders_by_mean_and_tests_each_against_the_winner():
    a, b, c = trials([0.8, 0.9, 0.7], [0.1, 0.05, 0.01])[:3]
    rows = rank([(a, [0.80, 0.82, 0.81]), (b, [0.84, 0.86, 0.85]), (c, [0.83])])
    assert [r.trial.number for r in rows] == [1, 0]  # c has one seed: no interval, left out
    assert math.isnan(rows[0].p_vs_best)
    assert rows[1].p_vs_best == pytest.approx(welch_p([0.80, 0.82, 0.81], [0.84, 0.86, 0.85]))
    assert "beats the runner-up beyond seed noise" in verdict(rows)
    close = rank([(a, [0.80, 0.83, 0.81]), (b, [0.81, 0.84, 0.80])])
    assert "does NOT beat the runner-up beyond seed noise" in verdict(close)
    assert "no runner-up, no p-value" in verdict(rows[:1])


def test_fresh_seeds_avoid_the_trials_seed_and_a_larger_n_only_adds():
    assert fresh_seeds(7, 3) == [8, 9, 10]
    assert fresh_seeds(7, 5)[:3] == fresh_seeds(7, 3)
    assert 7 not in fresh_seeds(7, 5)


# --- bad flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--seeds", "1"], "--seeds: must be >= 2, got 1: a confidence interval needs 2 seeds"),
        (["--confirm-top", "-1"], "--confirm-top: must be >= 0, got -1"),
        (["--seeds", "two"], "--seeds: expected an integer, got 'two'"),
    ],
)
def test_bad_confirm_flags_exit_2(store, tmp_path, args, says):
    res = call_main(tune_main, *study_args(tmp_path), *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "optuna.db").exists()
    assert not Path(store.removeprefix("sqlite:///")).exists() or run_ids(store) == []


# --- a real study, confirmed -------------------------------------------------------------------

SMALL = ["--width", "8", "--train-subset", "512", "--val-size", "500", "--pruner", "none"]
LR_SPACE = "lr: {type: float, low: 0.01, high: 0.1, log: true}\n"


def confirm_args(tmp: Path, *extra: str) -> list[str]:
    space = write(tmp, "space.yaml", LR_SPACE)
    return [*study_args(tmp, "c"), *SMALL, "--space", space, "--sampler", "random", *extra]


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("confirmed")
    uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        args = confirm_args(tmp, "--n-trials", "2", "--epochs", "1", "--no-checkpoint")
        res = call_main(tune_main, *args, "--confirm-top", "2", "--seeds", "2")
        assert res.returncode == 0, res.stdout + res.stderr
        c = MlflowClient(uri)
        parent = printed(res.stdout, "parent_run_id")
        confirm_id = printed(res.stdout, "confirm_run_id")
        return SimpleNamespace(
            tmp=tmp,
            out=res.stdout,
            client=c,
            parent=c.get_run(parent),
            confirm=c.get_run(confirm_id),
            seed_runs=children(uri, confirm_id),
            table=pd.read_csv(c.download_artifacts(confirm_id, "confirm.csv", str(tmp))),
            trials=load(tmp, "c").trials,
        )


@pytest.mark.slow
def test_the_confirm_run_is_a_child_of_the_study_with_a_run_per_config_and_seed(confirmed):
    parent, run = confirmed.parent, confirmed.confirm
    assert run.info.run_name == "confirm" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["confirm_run_id"] == run.info.run_id
    top = sorted(confirmed.trials, key=lambda t: -t.value)[:2]
    seeds = fresh_seeds(0, 2)  # the study's seed is the default, 0
    names = sorted(r.info.run_name for r in confirmed.seed_runs)
    assert names == sorted(f"confirm-t{t.number:03d}-s{i}" for t in top for i in (1, 2))
    for r in confirmed.seed_runs:
        trial = next(t for t in top if t.number == int(r.data.tags["confirm_trial"]))
        assert r.info.status == "FINISHED"
        assert r.data.params["seed"] == r.data.tags["confirm_seed"]
        assert int(r.data.params["seed"]) == seeds[int(r.info.run_name[-1]) - 1]
        assert float(r.data.params["lr"]) == pytest.approx(trial.params["lr"])
        assert r.data.params["val_size"] == "500"  # the trials' split, scored the same way
    plots = [a.path for a in confirmed.client.list_artifacts(run.info.run_id, "plots")]
    assert plots == ["plots/confirm.png"]


@pytest.mark.slow
def test_confirm_csv_holds_each_configs_seed_runs_and_best_yaml_the_highest_mean(confirmed):
    table = confirmed.table
    columns = ["trial", "baseline", "params", "n", "mean", "ci_low", "ci_high", "p_vs_best"]
    assert list(table.columns) == columns and not table["baseline"].any()
    values = {}
    for r in confirmed.seed_runs:
        values.setdefault(int(r.data.tags["confirm_trial"]), []).append(
            r.data.metrics["best_val_accuracy"]
        )
    assert sorted(table["trial"]) == sorted(values)
    for row in table.itertuples():
        v = values[row.trial]
        assert row.n == 2 and row.mean == pytest.approx(np.mean(v))
        half = 12.706 * np.std(v, ddof=1) / math.sqrt(2)  # t(0.975, 1 df)
        assert (row.ci_low, row.ci_high) == pytest.approx(
            (np.mean(v) - half, np.mean(v) + half), abs=1e-4
        )
    winner, runner_up = (SimpleNamespace(**table.iloc[i].to_dict()) for i in (0, 1))
    assert winner.mean == pytest.approx(max(np.mean(v) for v in values.values()))
    assert math.isnan(winner.p_vs_best)
    assert runner_up.p_vs_best == pytest.approx(
        welch_p(values[runner_up.trial], values[winner.trial])
    )
    assert confirmed.parent.data.tags["confirmed_trial"] == str(winner.trial)
    history = confirmed.client.get_metric_history(
        confirmed.confirm.info.run_id, "val_accuracy_mean"
    )
    assert {m.step: m.value for m in history} == pytest.approx(
        dict(zip(table["trial"], table["mean"], strict=True))
    )

    best_yaml = Path(printed(confirmed.out, "best_config"))
    header = best_yaml.read_text().splitlines()[0]
    assert f"trial {winner.trial}, confirmed over 2 fresh seeds: val_accuracy " in header
    assert f"{winner.mean:.4f} ± " in header
    lr = next(t for t in confirmed.trials if t.number == winner.trial).params["lr"]
    assert yaml.safe_load(best_yaml.read_text())["lr"] == lr

    lines = confirmed.out.splitlines()
    assert f"confirmed_trial: {winner.trial}" in lines
    verdicts = [ln for ln in lines if "beat the runner-up" in ln or "beats the runner-up" in ln]
    assert len(verdicts) == 1
    assert ("NOT" in verdicts[0]) == (runner_up.p_vs_best >= 0.05)


# --- stopped halfway, then rerun -----------------------------------------------------------------


@pytest.mark.slow
def test_a_confirmation_stopped_halfway_trains_only_what_is_missing_on_rerun(store, tmp_path):
    # One trial for --confirm-top 3 (the default): the only config is confirmed, without p.
    args = confirm_args(tmp_path, "--n-trials", "1", "--epochs", "2", "--confirm-top", "3")
    args += ["--seeds", "2"]
    proc = start("tune.py", *args)
    seen, second = [], False
    for line in proc.stdout:
        seen.append(line)
        second = second or line.startswith("confirm: confirm-t000-s2 starts")
        if second and line.startswith("epoch 1/2"):
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out
    assert "confirming 1 config(s), all the study has (--confirm-top 3)" in out
    assert "no p-value (a comparison needs a runner-up)" in out
    c = MlflowClient(store)
    confirm_id = printed(out, "confirm_run_id")
    assert c.get_run(confirm_id).info.status == "KILLED"
    assert c.get_run(printed(out, "parent_run_id")).info.status == "KILLED"
    killed = printed(out, "mlflow_run_id")
    assert c.get_run(killed).info.status == "KILLED"

    again = call_main(tune_main, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert printed(again.stdout, "confirm_run_id") == confirm_id
    assert " starts: " not in again.stdout.split("confirming")[0]  # the trial is not rerun
    assert "confirm-t000-s1 starts" not in again.stdout
    assert f"confirm: confirm-t000-s2 resumes {killed} at epoch 1" in again.stdout
    assert "trial 0 is the only config confirmed: no runner-up, no p-value" in again.stdout

    runs = children(store, confirm_id)
    assert sorted(r.info.run_name for r in runs) == ["confirm-t000-s1", "confirm-t000-s2"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert not any(c.list_artifacts(r.info.run_id, "checkpoints") for r in runs)
    resumed = c.get_run(killed)
    assert [m.step for m in c.get_metric_history(killed, "val_accuracy")] == [1, 2]
    assert resumed.info.status == "FINISHED"
    assert c.get_run(confirm_id).info.status == "FINISHED"
    header = Path(printed(again.stdout, "best_config")).read_text().splitlines()[0]
    assert "trial 0, confirmed over 2 fresh seeds" in header


# --- the baseline: trial 0, confirmed beside the best -------------------------------------------

# On 512 images without warmup, lr 1e-5 learns next to nothing and 0.5 reaches 40-50% val
# accuracy in two epochs, so which config beats which is known in advance, far beyond seed
# noise. Epochs are searched too: a trial trains, and its retrain retrains, for its own number.
BASE_SPACE = """\
lr: {type: categorical, choices: [1.0e-5, 0.5]}
epochs: {type: categorical, choices: [1, 2]}
"""


def baseline_study(tmp: Path, base_lr: str, other: str, *extra: str) -> SimpleNamespace:
    """Trial 0 the base config at base_lr and 1 epoch, trial 1 the experiment file `other`,
    both confirmed over 3 seeds (with 2, one degree of freedom leaves even a gap of tens of
    points short of p < 0.05), in a store of their own."""
    uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
    space = write(tmp, "space.yaml", BASE_SPACE)
    args = [a for a in study_args(tmp, "b") if a != "--no-baseline"]
    args += [*SMALL, "--space", space, "--lr", base_lr, "--epochs", "1", "--warmup-epochs", "0"]
    args += ["--no-checkpoint"]
    args += ["--n-trials", "2", "--enqueue", write(tmp, "other.yaml", other)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        res = call_main(tune_main, *args, "--confirm-top", "2", "--seeds", "3", *extra)
    assert res.returncode == 0, res.stdout + res.stderr
    return SimpleNamespace(out=res.stdout, client=MlflowClient(uri), trials=load(tmp, "b").trials)


@pytest.fixture(scope="module")
def beaten(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A base config that barely learns, beaten by trial 1, which is then retrained."""
    tmp = tmp_path_factory.mktemp("beaten")
    return baseline_study(tmp, "1e-5", "lr: 0.5\nepochs: 2\n", "--retrain-best")


@pytest.fixture(scope="module")
def unbeaten(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A base config that learns, which trial 1 (lr 1e-5) cannot beat."""
    tmp = tmp_path_factory.mktemp("unbeaten")
    return baseline_study(tmp, "0.5", "lr: 1.0e-5\n")


@pytest.mark.slow
def test_the_baseline_is_trial_0_and_is_confirmed_beside_the_best(beaten):
    base, other = beaten.trials
    assert base.user_attrs["enqueued_from"] == "the base config"
    assert base.params == {"lr": 1e-5, "epochs": 1} and other.params == {"lr": 0.5, "epochs": 2}
    run = beaten.client.get_run(base.user_attrs["mlflow_run_id"])
    assert run.info.run_name == "trial-000-baseline" and run.data.tags["optuna_baseline"] == "true"
    assert "trial 0 starts: the baseline, the base config" in beaten.out
    assert "0 (baseline)  3" in beaten.out  # its row of the confirmation table, with 3 seeds
    confirm_id = printed(beaten.out, "confirm_run_id")
    seed_runs = children(beaten.client.tracking_uri, confirm_id)
    # The baseline's own trial (seed 0) is one of its three: nothing chose it for scoring high.
    seeds = sorted((r.data.tags["confirm_trial"], r.data.tags["confirm_seed"]) for r in seed_runs)
    assert seeds == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2"), ("1", "3")]
    by_seed = sorted(seed_runs, key=lambda r: int(r.data.tags["confirm_seed"]))
    values = {
        t: [
            r.data.metrics["best_val_accuracy"]
            for r in by_seed
            if r.data.tags["confirm_trial"] == t
        ]
        for t in ("0", "1")
    }
    values["0"].insert(0, base.value)
    assert printed(beaten.out, "baseline_val_accuracies") == ",".join(
        f"{v:.4f}" for v in values["0"]
    )
    g = gain(values["1"], values["0"])
    assert float(printed(beaten.out, "gain_over_baseline_points")) == pytest.approx(
        g.points, abs=0.01
    )
    low, high = map(float, printed(beaten.out, "gain_over_baseline_ci95_points").split(","))
    assert (low, high) == pytest.approx((g.low, g.high), abs=0.01)
    assert float(printed(beaten.out, "gain_over_baseline_p")) == pytest.approx(g.p, rel=1e-2)
    assert g.p < 0.05 and printed(beaten.out, "beats_baseline") == "yes"
    assert f"trial 1 beats the baseline (trial 0) beyond seed noise: {g}" in beaten.out
    assert printed(beaten.out, "confirmed_trial") == "1"
    note = beaten.client.get_run(printed(beaten.out, "parent_run_id")).data.tags
    assert note["mlflow.note.content"].startswith("**Study b**: trial 1 beats the baseline")


@pytest.mark.slow
def test_the_retrain_trains_the_winner_for_its_trials_epochs_and_registers_its_seeds(beaten):
    run = beaten.client.get_run(printed(beaten.out, "retrain_run_id"))
    assert run.data.params["epochs"] == "2" and run.data.params["lr"] == "0.5"  # the base: 1
    version = beaten.client.get_model_version_by_alias("fashion-lab", "champion")
    assert version.run_id == run.info.run_id
    seeds = json.loads(version.tags["val_accuracy_seeds"])
    assert ",".join(f"{v:.4f}" for v in seeds) == printed(beaten.out, "challenger_val_accuracies")


@pytest.mark.slow
def test_when_nothing_beats_the_baseline_the_study_says_so_and_best_yaml_is_the_baseline(unbeaten):
    out = unbeaten.out
    verdict = [ln for ln in out.splitlines() if "beat" in ln and "the baseline" in ln]
    assert len(verdict) == 1
    assert verdict[0].startswith("nothing beats the baseline (trial 0) beyond seed noise")
    assert verdict[0].endswith("best.yaml is the baseline")
    assert printed(out, "beats_baseline") == "no" and printed(out, "confirmed_trial") == "0"
    assert float(printed(out, "gain_over_baseline_points")) < 0
    best = Path(printed(out, "best_config"))
    assert "trial 0 (baseline), confirmed over 3 fresh seeds" in best.read_text().splitlines()[0]
    assert yaml.safe_load(best.read_text())["lr"] == 0.5
