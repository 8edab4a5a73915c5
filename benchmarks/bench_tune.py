"""The README's flows run as a user runs them, with make, side by side on the CPU at hand.

- `make train ARGS="--seed K"` for K = 0, 1, 2: test accuracy, train()'s seconds, wall time.
- From an empty store, `make tune` then `make tune ARGS=--retrain-best`, each timed to its exit:
  the per-seed val accuracies of the baseline and the challenger that the first prints, and the
  registered champion's test accuracy that the second prints (their `key: value` lines).
- A study of make tune's space with the pruner off (RUNG_TRIALS trials, drawn at random): each
  trial's val accuracy at the first rung (make tune's --prune-from-epoch) and at its end.
"""

from __future__ import annotations

import re
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import ROOT, process
from benchmarks.process import ProcessRun, script_env
from benchmarks.publish import parse, parser, publish, result_name

# Width 0 (the model's own): the baseline's width must be one make tune's space holds.
SMOKE = ["--epochs", "1", "--train-subset", "512", *process.SMOKE_CONFIG, "--width", "0"]
# Both trials confirmed: whichever wins, the baseline (trial 0) has a challenger to face.
TUNE_SMOKE = [*SMOKE, "--n-trials", "2", "--seeds", "2", "--confirm-top", "2"]
RUNG_TRIALS = 12


def make(target: str, args: Sequence[str], env: dict[str, str]) -> ProcessRun:
    return process.run_process(["make", target, "ARGS=" + shlex.join(args)], env).check()


def prune_from_epoch(makefile: str) -> int:
    """The first rung: the --prune-from-epoch of the Makefile's tune recipe."""
    recipe = re.search(r"^tune:[^\n]*\n((?:\t[^\n]*\n?)+)", makefile, re.M)
    found = re.search(r"--prune-from-epoch[ =](\d+)", recipe[1] if recipe else "")
    if found is None:
        raise ValueError("the Makefile's tune recipe names no --prune-from-epoch")
    return int(found[1])


def flow(tune: ProcessRun, retrain: ProcessRun) -> dict[str, Any]:
    """What the tuning flow printed and how long each command took."""

    def values(key: str) -> list[float]:
        return [float(v) for v in tune.value(key).split(",")]

    return {
        "tune_s": tune.wall_s,
        "retrain_s": retrain.wall_s,
        "baseline_trial": int(tune.value("baseline_trial")),
        "baseline": values("baseline_val_accuracies"),
        "challenger_trial": int(tune.value("challenger_trial")),
        "challenger": values("challenger_val_accuracies"),
        "printed_gain": [
            float(tune.value("gain_over_baseline_points")),
            *values("gain_over_baseline_ci95_points"),
            float(tune.value("gain_over_baseline_p")),
        ],
        "beats_baseline": {"yes": True, "no": False}[tune.value("beats_baseline")],
        "confirmed_trial": int(tune.value("confirmed_trial")),
        "champion_test_accuracy": float(retrain.value("test_accuracy")),
        "registered": retrain.value("registered"),
    }


def rungs(storage: str, uri: str, rung: int) -> list[dict[str, Any]]:
    """Each complete trial of study `rungs`: its val accuracy at epoch `rung` and at its end."""
    import optuna
    from mlflow.tracking import MlflowClient

    client, out = MlflowClient(uri), []
    study = optuna.load_study(study_name="rungs", storage=storage)
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        run_id = t.user_attrs["mlflow_run_id"]
        history = {m.step: m.value for m in client.get_metric_history(run_id, "val_accuracy")}
        final = client.get_run(run_id).data.metrics["best_val_accuracy"]
        out.append({"trial": t.number, "at_rung": history[rung], "final": final})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(parser("bench_tune", __doc__.split("\n\n")[0], repeats=3), argv)
    if args.device != "cpu":
        print("error: make picks its device itself; leave --device out", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-tune-"))
    train = []
    for seed in range(args.repeats):
        store = tmp / f"train-{seed}"
        store.mkdir()
        process.prepare_store(store)
        smoke = process.TRAIN_SMOKE * args.smoke
        run = make("train", ["--seed", str(seed), *smoke], script_env(store))
        accuracy, train_s = float(run.value("test_accuracy")), float(run.value("wall_time_s"))
        train.append(
            {"seed": seed, "test_accuracy": accuracy, "train_s": train_s, "wall_s": run.wall_s}
        )
    # Both commands on one empty store: the flow pays for making it, as a first user does.
    env, storage = script_env(tmp), f"sqlite:///{tmp}/optuna.db"
    to = ["--storage", storage, "--output-dir", str(tmp / "out"), *TUNE_SMOKE * args.smoke]
    tuned = make("tune", to, env)
    retrained = make("tune", ["--retrain-best", *to], env)
    rung = prune_from_epoch((ROOT / "Makefile").read_text())
    rung_storage = f"sqlite:///{tmp}/rungs.db"
    trials = "2" if args.smoke else str(RUNG_TRIALS)
    study = ["--study-name", "rungs", "--storage", rung_storage, "--output-dir", str(tmp / "rungs")]
    # Drawn at random, not by TPE: a sample of the whole space, not of the corner TPE favours,
    # is what says whether a rung ranks the configs make tune may meet.
    no_pruning = ["--pruner", "none", "--sampler", "random", "--n-trials", trials]
    no_pruning += ["--confirm-top", "0"]
    # At smoke sizes too, the trials run as far as the first rung.
    smoke = [*SMOKE, "--epochs", str(rung)] if args.smoke else []
    make("tune", [*smoke, *study, *no_pruning], env)
    samples = {
        "prune_from_epoch": rung,
        "train": train,
        "flow": flow(tuned, retrained),
        "rungs": rungs(rung_storage, env["MLFLOW_TRACKING_URI"], rung),
    }
    publish(args, result_name("tune", "cpu"), "tune", samples, extra_code=["Makefile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
