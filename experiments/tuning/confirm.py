"""Seed-confirmed winners. A trial's val accuracy moves by a few tenths with its seed alone,
so the trial that scored highest may have drawn a lucky seed. After the search the top K
complete configs, and the baseline (the base config, trial 0), train again with N fresh seeds
each. The winner is the config with the highest mean that beats the baseline beyond seed noise
(Welch's t-test, p < 0.05); when none does, the baseline stays the winner.

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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from experiments import study_plots
from experiments.checkpoint import CheckpointError
from experiments.engine import train
from experiments.stats import ALPHA, gain, mean_ci, welch_p
from experiments.stops import DivergenceError
from experiments.tuning.study import StudyContext, is_baseline
from experiments.tuning.text import fmt_params, print_table
from experiments.tuning.worker import run_checkpoint

if TYPE_CHECKING:  # experiments.tracking imports mlflow, which tune.py --help should not wait for
    from experiments.tracking.confirm import SeedRun


def fresh_seeds(study_seed: int, n: int) -> list[int]:
    """Seeds other than the study's, which every trial trained with. Offsets rather than random
    draws, so a rerun asks for the same seeds and a larger --seeds only adds some."""
    return [study_seed + i for i in range(1, n + 1)]


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
    """Train what is missing of (top K + the baseline) x N fresh seeds, then rank; the winner,
    or None if no config has 2 finished seeds. One process at a time per study; another
    launcher waits, then finds every run done. KeyboardInterrupt (Ctrl-C, SIGTERM) ends the
    confirm run KILLED and propagates."""
    a, tracking = st.args, st.tracking
    # The baseline, if it completed, is confirmed beside the K best others, whatever its rank.
    everything = top_configs(trials, len(trials))
    baseline = next((t for t in everything if is_baseline(t)), None)
    top = [t for t in everything if t is not baseline][: a.confirm_top]
    extra = [] if baseline is None else [baseline]
    seeds = fresh_seeds(st.base.seed, a.seeds)
    few = (
        "" if len(top) == a.confirm_top else f", all the study has (--confirm-top {a.confirm_top})"
    )
    also = f", and the baseline (trial {baseline.number})" if extra else ""
    print(
        f"\nconfirming {len(top)} config(s){few}{also} with {len(seeds)} fresh seeds each "
        f"({', '.join(map(str, seeds))}), on the trials' train/val split"
        + (f"; the baseline's own trial counts as its seed {st.base.seed}" if extra else "")
    )
    if len(top + extra) == 1:
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
            rows = train_missing(st, run_id, top + extra, seeds)
            winner = report(st, run_id, rows, len(seeds)) if rows else None
        except BaseException as e:
            tracking.end_run(run_id, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        tracking.end_run(run_id, "FINISHED")
    if winner is None:
        print("no config finished 2 seeds: nothing is confirmed")
    return winner


def seeds_of(st: StudyContext, trial: FrozenTrial, fresh: Sequence[int]) -> list[int]:
    """The seeds a config is scored over: fresh ones, but for the baseline its own trial (the
    study's seed) and one fresh seed fewer. Nothing picked the baseline's trial for scoring
    high, so its score is a fair draw of the config; the best other trial's is not."""
    return [st.base.seed, *fresh[:-1]] if is_baseline(trial) else list(fresh)


def train_missing(
    st: StudyContext, run_id: str, top: Sequence[FrozenTrial], seeds: Sequence[int]
) -> list[Confirmed]:
    """Every (config, fresh seed) pair without a FINISHED run trains once; then the ranking."""
    have = {(r.trial, r.seed): r for r in st.tracking.seed_runs(st.base.experiment_name, run_id)}
    for t in top:
        for seed in seeds_of(st, t, seeds):
            if seed not in seeds:
                continue  # the baseline's own trial: scored already
            prev = have.get((t.number, seed))
            if prev is None or prev.status != "FINISHED":
                if prev is not None and prev.error.startswith("diverged"):
                    continue  # a fresh seed that diverges is this config's result; so it stays
                train_seed(st, run_id, t, seeds.index(seed) + 1, seed, prev)
    done = {
        (r.trial, r.seed): r.value
        for r in st.tracking.seed_runs(st.base.experiment_name, run_id)
        if r.status == "FINISHED" and r.value is not None
    }
    done |= {(t.number, st.base.seed): t.value for t in top if is_baseline(t)}
    return rank(
        [
            (t, [done[t.number, s] for s in seeds_of(st, t, seeds) if (t.number, s) in done])
            for t in top
        ]
    )


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


def trial_name(trial: FrozenTrial) -> str:
    return f"{trial.number}{' (baseline)' if is_baseline(trial) else ''}"


def label(row: Confirmed) -> str:
    return f"trial {trial_name(row.trial)}\n" + "\n".join(fmt_params(row.trial.params).split())


def against_baseline(rows: Sequence[Confirmed]) -> tuple[Confirmed, list[str]]:
    """The winner when the baseline is among rows: the highest mean that beats it beyond seed
    noise, else the baseline itself; and the lines that say so, the verdict first, then
    `key: value` lines for scripts. The challenger is the best config that is not the
    baseline, compared with it whether or not it won."""
    base = next(r for r in rows if is_baseline(r.trial))
    others = [r for r in rows if r is not base]
    if not others:
        line = f"only the baseline (trial {base.trial.number}) finished its seeds: nothing to "
        return base, [line + "compare it with; best.yaml is the baseline"]
    gains = [gain(r.values, base.values) for r in others]
    beats = [(r, g) for r, g in zip(others, gains, strict=True) if g.beyond_noise()]
    challenger, g = beats[0] if beats else (others[0], gains[0])
    if beats:
        verdict_line = (
            f"trial {challenger.trial.number} beats the baseline (trial {base.trial.number}) "
            f"beyond seed noise: {g}; best.yaml is trial {challenger.trial.number}"
        )
    else:
        verdict_line = (
            f"nothing beats the baseline (trial {base.trial.number}) beyond seed noise: the best "
            f"other config, trial {challenger.trial.number}, is {g}; best.yaml is the baseline"
        )
    winner = challenger if beats else base
    return winner, [
        verdict_line,
        f"baseline_trial: {base.trial.number}",
        f"baseline_val_accuracies: {','.join(f'{v:.4f}' for v in base.values)}",
        f"challenger_trial: {challenger.trial.number}",
        f"challenger_val_accuracies: {','.join(f'{v:.4f}' for v in challenger.values)}",
        f"gain_over_baseline_points: {g.points:.2f}",
        f"gain_over_baseline_ci95_points: {g.low:.2f},{g.high:.2f}",
        f"gain_over_baseline_p: {g.p:.3g}",
        f"beats_baseline: {'yes' if beats else 'no'}",
    ]


def report(st: StudyContext, run_id: str, rows: Sequence[Confirmed], n_seeds: int) -> Confirmed:
    """The table and the verdict printed; confirm.csv, plots/confirm.png and the statistics
    (step = trial number) on the confirm run, the verdict in the parent's description. Returns
    the winner."""
    print(f"\nconfirmed over {n_seeds} fresh seeds (best val accuracy, mean and 95% CI):")
    print_table(
        ["trial", "n", "mean", "95% CI", "p_vs_best", "params"],
        [
            [
                trial_name(r.trial),
                str(len(r.values)),
                f"{r.mean:.4f}",
                f"[{r.ci_low:.4f}, {r.ci_high:.4f}]",
                "-" if math.isnan(r.p_vs_best) else f"{r.p_vs_best:.3g}",
                fmt_params(r.trial.params),
            ]
            for r in rows
        ],
    )
    if any(is_baseline(r.trial) for r in rows):
        winner, lines = against_baseline(rows)
    else:
        winner, lines = rows[0], [verdict(rows)]
    for line in [*lines, f"confirmed_trial: {winner.trial.number}"]:
        print(line)
    print(f"confirmed_val_accuracy: {winner.mean:.4f}")
    table = pd.DataFrame(
        {
            "trial": [r.trial.number for r in rows],
            "baseline": [is_baseline(r.trial) for r in rows],
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
    note = summary_markdown(st, rows, lines[0], n_seeds)
    st.tracking.log_confirmed(run_id, st.parent_run_id, points, winner.trial.number, note)
    return winner


def summary_markdown(st: StudyContext, rows: Sequence[Confirmed], verdict_line: str, n: int) -> str:
    """The study's result as the parent run's description, the first thing its page shows."""
    head = f"**Study {st.args.study_name}**: {verdict_line}.\n\n"
    head += f"Confirmed over {n} fresh seeds (best val accuracy, mean and 95% CI):\n\n"
    head += "| trial | mean | 95% CI | params |\n| --- | --- | --- | --- |\n"
    return head + "".join(
        f"| {trial_name(r.trial)} | {r.mean:.4f} "
        f"| [{r.ci_low:.4f}, {r.ci_high:.4f}] | {fmt_params(r.trial.params)} |\n"
        for r in rows
    )
