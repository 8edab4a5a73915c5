"""Seed-confirmed winners. A 2-epoch trial's val accuracy moves by a few tenths with its seed
alone, so the trial that scored highest may have drawn a lucky seed. After the search the top
K complete configs train again with N fresh seeds each, and the winner is the config with the
highest mean val accuracy.

The N runs of a config differ only in what a seed changes: `seed` seeds init, shuffling,
augmentation and dropout, while the train/val split comes from train_val_split's own fixed
seed (experiments/splits.py `loaders`), so every run is scored on the same val images.

The statistics are plain functions of lists of numbers. The runs go to MLflow through
experiments.tracking: a `confirm` run under the study's parent, and under it one run per
(config, seed), `confirm-tNNN-sI`, tagged confirm_trial and confirm_seed. A rerun trains only
the pairs without a FINISHED run, resuming a killed one from its checkpoint.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from experiments import study_plots
from experiments.checkpoint import CheckpointError
from experiments.engine import train
from experiments.stops import DivergenceError
from experiments.tuning.study import StudyContext
from experiments.tuning.text import fmt_params, print_table
from experiments.tuning.worker import run_checkpoint

if TYPE_CHECKING:  # experiments.tracking imports mlflow, which tune.py --help should not wait for
    from experiments.tracking.confirm import SeedRun

CONFIDENCE = 0.95
ALPHA = 0.05  # a winner whose Welch p against the runner-up is below this beats it


def fresh_seeds(study_seed: int, n: int) -> list[int]:
    """Seeds other than the study's, which every trial trained with. Offsets rather than random
    draws, so a rerun asks for the same seeds and a larger --seeds only adds some."""
    return [study_seed + i for i in range(1, n + 1)]


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The mean and its t-distribution confidence interval (low, high); two values or more."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError(f"a confidence interval needs 2 values or more, got {len(x)}")
    mean = float(x.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (variances not assumed equal). NaN when both samples
    are the same constant: no spread to judge a difference by, and no difference."""
    with warnings.catch_warnings():
        # Near-identical samples make scipy warn of precision loss; the p-value still stands.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


class Confirmed(NamedTuple):
    trial: FrozenTrial
    values: list[float]  # best val accuracy of each fresh seed that finished
    mean: float
    ci_low: float
    ci_high: float
    p_vs_best: float  # Welch's p against the winner's values; NaN for the winner itself


def rank(configs: Sequence[tuple[FrozenTrial, list[float]]]) -> list[Confirmed]:
    """Configs with 2 values or more, highest mean first (ties: the earlier trial), each with
    its p-value against the first."""
    scored = sorted(
        ((t, v, *mean_ci(v)) for t, v in configs if len(v) >= 2),
        key=lambda r: (-r[2], r[0].number),
    )
    return [
        Confirmed(t, v, m, lo, hi, math.nan if i == 0 else welch_p(v, scored[0][1]))
        for i, (t, v, m, lo, hi) in enumerate(scored)
    ]


def verdict(rows: Sequence[Confirmed]) -> str:
    """One line: whether the winner beats the runner-up beyond seed noise."""
    win = rows[0]
    if len(rows) == 1:
        return f"trial {win.trial.number} is the only config confirmed: no runner-up, no p-value"
    up, p = rows[1], rows[1].p_vs_best
    pair = f"trial {win.trial.number} (mean {win.mean:.4f}) vs trial {up.trial.number} "
    pair += f"(mean {up.mean:.4f})"
    if math.isnan(p):
        return f"{pair}: every seed scored the same; no p-value"
    if p < ALPHA:
        return f"{pair}: the winner beats the runner-up beyond seed noise (Welch p = {p:.3g})"
    return f"{pair}: the winner does NOT beat the runner-up beyond seed noise (Welch p = {p:.3g})"


def top_configs(trials: Sequence[FrozenTrial], k: int) -> list[FrozenTrial]:
    """The best k COMPLETE trials with distinct params: a sampler may draw one config twice."""
    done = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: (-t.value, t.number),
    )
    seen: set[str] = set()
    out = []
    for t in done:
        key = json.dumps(t.params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out[:k]


def seed_run_name(trial: FrozenTrial, index: int) -> str:
    return f"confirm-t{trial.number:03d}-s{index}"


def confirm(st: StudyContext, trials: Sequence[FrozenTrial]) -> Confirmed | None:
    """Train what is missing of top K x N fresh seeds, then rank; None if no config has 2
    finished seeds. One process at a time per study; another launcher waits, then finds every
    run done. KeyboardInterrupt (Ctrl-C, SIGTERM) ends the confirm run KILLED and propagates."""
    a, tracking = st.args, st.tracking
    top = top_configs(trials, a.confirm_top)
    seeds = fresh_seeds(st.base.seed, a.seeds)
    few = (
        "" if len(top) == a.confirm_top else f", all the study has (--confirm-top {a.confirm_top})"
    )
    print(
        f"\nconfirming {len(top)} config(s){few} with {len(seeds)} fresh seeds each "
        f"({', '.join(map(str, seeds))}), on the trials' train/val split"
    )
    if len(top) == 1:
        print("one config: its mean and CI only, no p-value (a comparison needs a runner-up)")
    with st.confirm_lock():
        run_id = tracking.open_confirm_run(
            st.base.experiment_name,
            st.parent_run_id,
            a.study_name,
            {"confirm_top": a.confirm_top, "confirm_seeds": ",".join(map(str, seeds))},
        )
        print(f"confirm_run_id: {run_id}")
        try:
            rows = train_missing(st, run_id, top, seeds)
            if rows:
                report(st, run_id, rows, len(seeds))
        except BaseException as e:
            tracking.end_run(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        tracking.end_run(run_id, "FINISHED")
    if not rows:
        print("no config finished 2 seeds: nothing is confirmed")
        return None
    return rows[0]


def train_missing(
    st: StudyContext, run_id: str, top: Sequence[FrozenTrial], seeds: Sequence[int]
) -> list[Confirmed]:
    """Every (config, seed) pair without a FINISHED run trains once; then the ranking."""
    have = {(r.trial, r.seed): r for r in st.tracking.seed_runs(st.base.experiment_name, run_id)}
    for t in top:
        for i, seed in enumerate(seeds, 1):
            prev = have.get((t.number, seed))
            if prev is None or prev.status != "FINISHED":
                if prev is not None and prev.error.startswith("diverged"):
                    continue  # a fresh seed that diverges is this config's result; so it stays
                train_seed(st, run_id, t, i, seed, prev)
    done = {
        (r.trial, r.seed): r.value
        for r in st.tracking.seed_runs(st.base.experiment_name, run_id)
        if r.status == "FINISHED" and r.value is not None
    }
    return rank([(t, [done[t.number, s] for s in seeds if (t.number, s) in done]) for t in top])


def train_seed(
    st: StudyContext, run_id: str, trial: FrozenTrial, index: int, seed: int, prev: SeedRun | None
) -> None:
    """One fresh seed of a trial's config; prev, a SeedRun this pair left unfinished, resumes
    from its checkpoint, or is deleted and trained anew."""
    tracking, name = st.tracking, seed_run_name(trial, index)
    cfg = st.trial_config(trial, seed=seed, run_name=name)
    resume, attach = None, None
    if prev is not None:
        try:
            resume, attach = run_checkpoint(tracking, prev.run_id, cfg), prev.run_id
            print(f"confirm: {name} resumes {prev.run_id} at epoch {resume['epoch']}")
        except CheckpointError as e:
            print(f"confirm: {name} starts over: {e}")
            tracking.delete_run(prev.run_id)
    logger = tracking.MlflowCallback(
        cfg,
        run_id=attach,
        parent_run_id=run_id,
        log_model=False,
        tags={
            "optuna_study": st.args.study_name,
            "confirm_trial": str(trial.number),
            "confirm_seed": str(seed),
        },
    )
    print(f"confirm: {name} starts: trial {trial.number}, seed {seed}", flush=True)
    try:
        result = train(cfg, [logger], resume=resume, test=False)
    except DivergenceError as e:
        print(f"confirm: {name} diverged, left out of the mean: {e}")
        return
    print(f"confirm: {name} val_accuracy {result.best_val_accuracy:.4f}")
    if not st.args.keep_checkpoints:
        tracking.drop_checkpoints(logger.run_id)


def label(row: Confirmed) -> str:
    return f"trial {row.trial.number}\n" + "\n".join(fmt_params(row.trial.params).split())


def report(st: StudyContext, run_id: str, rows: Sequence[Confirmed], n_seeds: int) -> None:
    """The table and the verdict printed; confirm.csv, plots/confirm.png and the statistics
    (step = trial number) on the confirm run."""
    print(f"\nconfirmed over {n_seeds} fresh seeds (best val accuracy, mean and 95% CI):")
    print_table(
        ["trial", "n", "mean", "95% CI", "p_vs_best", "params"],
        [
            [
                str(r.trial.number),
                str(len(r.values)),
                f"{r.mean:.4f}",
                f"[{r.ci_low:.4f}, {r.ci_high:.4f}]",
                "-" if math.isnan(r.p_vs_best) else f"{r.p_vs_best:.3g}",
                fmt_params(r.trial.params),
            ]
            for r in rows
        ],
    )
    print(verdict(rows))
    print(f"confirmed_trial: {rows[0].trial.number}")
    print(f"confirmed_val_accuracy: {rows[0].mean:.4f}")
    table = pd.DataFrame(
        {
            "trial": [r.trial.number for r in rows],
            "params": [fmt_params(r.trial.params) for r in rows],
            "n": [len(r.values) for r in rows],
            "mean": [r.mean for r in rows],
            "ci_low": [r.ci_low for r in rows],
            "ci_high": [r.ci_high for r in rows],
            "p_vs_best": [r.p_vs_best for r in rows],
        }
    )
    values = pd.DataFrame([{"config": label(r), "val_accuracy": v} for r in rows for v in r.values])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table.to_csv(folder / "confirm.csv", index=False)
        (folder / "plots").mkdir()
        study_plots.seed_spread(values, folder / "plots" / "confirm.png")
        st.tracking.log_folder(run_id, folder)
    points = [
        (key, value, r.trial.number)
        for r in rows
        for key, value in [
            ("val_accuracy_mean", r.mean),
            ("val_accuracy_ci_low", r.ci_low),
            ("val_accuracy_ci_high", r.ci_high),
            ("seeds_finished", len(r.values)),
            ("p_vs_best", r.p_vs_best),
        ]
        if not math.isnan(value)
    ]
    st.tracking.log_confirmed(run_id, st.parent_run_id, points, rows[0].trial.number)
