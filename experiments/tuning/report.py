"""The end of a study: the table of best trials, the study's plots and trials.csv on the parent
run, best.yaml, and the optional retrain of the winner."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as ovm

from experiments import study_plots
from experiments.config import (
    Config,
    apply,
    to_dict,
)
from experiments.engine import train
from experiments.stops import DivergenceError, stop_cause, stop_exit_code
from experiments.tuning.confirm import Confirmed, confirm, trial_name
from experiments.tuning.space import PER_MACHINE
from experiments.tuning.study import StudyContext, counts, retried, stop_line
from experiments.tuning.text import fmt_params, print_table
from experiments.tuning.worker import best_trial, sweep_checkpoints


def summarize(st: StudyContext, study: optuna.Study, top: int) -> FrozenTrial | None:
    """Print the best trials and the study's counts; return the best trial."""
    trials = study.get_trials(deepcopy=False)
    best = best_trial(trials)
    done = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: (-t.value, t.number),
    )
    rows = [
        [
            str(t.number),
            t.state.name,
            f"{t.value:.4f}",
            fmt_params(t.params),
            t.user_attrs.get("mlflow_run_id", ""),
        ]
        for t in done[:top]
    ]
    if rows:
        print(f"\ntop {len(rows)} trials of study {st.args.study_name}:")
        print_table(["trial", "state", "val_acc", "params", "mlflow run"], rows)
    else:
        print(f"\nno trial of study {st.args.study_name} has completed")
    c = counts(trials)
    stand_ins = len(retried(trials))
    print(
        f"trials: {len(trials) - stand_ins} counted (budget {study.user_attrs['n_trials']}): "
        f"{c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL'] - stand_ins} failed, "
        f"{c['RUNNING']} running, {c['WAITING']} waiting; "
        f"{stand_ins} re-queued after a crash or Ctrl-C"
    )
    if stopped := stop_line(study):
        print(stopped)
    if best is not None:
        print(f"best_trial: {best.number}")
        print(f"best_val_accuracy: {best.value:.4f}")
    return best


OPTUNA_PLOTS = {
    "optimization_history": ovm.plot_optimization_history,
    "param_importances": ovm.plot_param_importances,
    "parallel_coordinate": ovm.plot_parallel_coordinate,
}


def log_study_artifacts(st: StudyContext, study: optuna.Study) -> None:
    """Optuna's own views, our seaborn views and trials.csv, on the parent run."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        df = study.trials_dataframe()
        study_plots.write_trials_csv(df, folder / "trials.csv")
        study_plots.study_plots(df, folder / "plots")
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


def write_best(
    st: StudyContext, best: FrozenTrial, cfg: Config, confirmed: Confirmed | None = None
) -> Path:
    """The best config as an experiment file: what differs from the defaults, plus the model
    and every searched field, so a later change of defaults cannot change what it trains."""
    defaults = to_dict(Config())
    keep = {"model", *best.params}
    body = {
        k: v
        for k, v in to_dict(cfg).items()
        if (k in keep or v != defaults[k]) and k not in PER_MACHINE
    }
    out = Path(st.args.output_dir or f"mlruns/studies/{st.args.study_name}") / "best.yaml"
    if confirmed is None:
        score = f"val_accuracy {best.value:.4f}"
    else:
        half = (confirmed.ci_high - confirmed.ci_low) / 2
        score = (
            f"confirmed over {len(confirmed.values)} fresh seeds: val_accuracy "
            f"{confirmed.mean:.4f} ± {half:.4f} (95% CI [{confirmed.ci_low:.4f}, "
            f"{confirmed.ci_high:.4f}]), its trial scored {best.value:.4f}"
        )
    text = (
        f"# Best of Optuna study {st.args.study_name!r}: trial {trial_name(best)}, {score} "
        f"(MLflow parent run {st.parent_run_id}).\n"
        f"# Retrain on all 60k: python train.py --config {out} --val-size 0 --train-subset 0\n"
        + yaml.safe_dump(body, sort_keys=False)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    st.tracking.log_text(st.parent_run_id, text, "best.yaml")
    return out


def retrain(st: StudyContext, best: FrozenTrial, cfg: Config, confirmed: Confirmed | None) -> int:
    full = {"val_size": 0, "train_subset": 0, "run_name": f"{st.args.study_name}-best-retrain"}
    cfg = apply(cfg, full, "--retrain-best")
    logger = st.tracking.MlflowCallback(
        cfg,
        tags={
            "optuna_study": st.args.study_name,
            "optuna_parent_run_id": st.parent_run_id,
            "optuna_best_trial": str(best.number),
        },
        # The retrain trains on the val images too, so the config is ranked by its trial's
        # val accuracy, or by its mean over the confirmation's seeds.
        register=st.tracking.Registration(
            st.args.register,
            best.value if confirmed is None else confirmed.mean,
            f"trial {best.number} of study {st.args.study_name}, retrained on all 60k images",
            () if confirmed is None else tuple(confirmed.values),
        ),
    )
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


def finish_study(st: StudyContext, code: int, status: str) -> int:
    """Summary, checkpoint sweep, confirmation, best.yaml, optional retrain; then the parent
    run ends."""
    study = st.load()
    best = summarize(st, study, st.args.top)
    log_study_artifacts(st, study)
    trials = study.get_trials(deepcopy=False)
    # Trials that --patience dropped stay WAITING but will never run.
    finished = all(t.state.is_finished() or "dropped" in t.user_attrs for t in trials)
    if not st.args.keep_checkpoints and finished:
        sweep_checkpoints(st, trials, final=True)
    if best is not None:
        # Workers that finished together may have tagged the parent out of order; settle it.
        st.tracking.log_study_best(
            st.parent_run_id,
            best.number,
            best.value,
            best.params,
            best.user_attrs.get("mlflow_run_id", ""),
        )
        confirmed = None
        if st.args.confirm_top and code == 0 and not finished:
            print("confirmation waits for the study's last trials: rerun the command to run it")
        elif st.args.confirm_top and code == 0:
            try:
                confirmed = confirm(st, trials)
            except KeyboardInterrupt as e:
                code, status = stop_exit_code(e), "KILLED"
                print(f"\n{stop_cause(e)}: rerun the same command to finish the confirmation")
        winner = best if confirmed is None else confirmed.trial
        cfg = st.trial_config(winner, run_name="")
        print(f"best_config: {write_best(st, winner, cfg, confirmed)}")
        if st.args.retrain_best and code == 0:
            code = retrain(st, winner, cfg, confirmed)
    st.tracking.end_run(st.parent_run_id, status)
    return code
