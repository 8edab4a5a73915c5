"""Figures for one study, drawn into a folder as PNGs, and its trials table as CSV.

Pure functions of a trials table (pandas, shaped like Optuna's ``trials_dataframe()``) or of seed
values: they know nothing of MLflow or Optuna. Built like the per-run figures of
experiments/plots.py, with seaborn for the statistical ones: its import, with scipy's, costs
about a second, which a training run that draws no study figure does not pay.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from experiments.plots import save_figure


def _scored(df: pd.DataFrame) -> pd.DataFrame:
    """Trials that have a val accuracy: complete ones, and pruned ones at their last report."""
    return df[df["value"].notna() & df["state"].isin(["COMPLETE", "PRUNED"])]


def accuracy_by_optimizer_init(df: pd.DataFrame, path: Path) -> Path | None:
    """Heatmap of the best val accuracy per optimizer x init, with the trial count per cell."""
    scored = _scored(df)
    if scored.empty:
        return None
    grid = scored.pivot_table(
        index="params_optimizer", columns="params_init", values="value", aggfunc=["max", "size"]
    )
    best, count = grid["max"], grid["size"].fillna(0).astype(int)
    notes = best.map(lambda v: "" if pd.isna(v) else f"{v:.4f}") + count.map(
        lambda n: f"\nn={n}" if n else ""
    )
    fig = Figure(figsize=(1.6 * best.shape[1] + 3, 0.8 * best.shape[0] + 2), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(
        best,
        annot=notes,
        fmt="",
        cmap="viridis",
        cbar_kws={"label": "best val accuracy"},
        annot_kws={"fontsize": 8},
        linewidths=0.5,
        linecolor="white",
        ax=ax,
    )
    ax.set(title="Best val accuracy by optimizer x init", xlabel="init", ylabel="optimizer")
    ax.tick_params(axis="x", labelrotation=30)
    ax.tick_params(axis="y", labelrotation=0)
    return save_figure(fig, path)


def accuracy_vs_lr(df: pd.DataFrame, path: Path) -> Path | None:
    """Val accuracy against learning rate (log x), coloured by batch size, marked by state."""
    scored = _scored(df)
    if scored.empty:
        return None
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    sns.scatterplot(
        data=scored.assign(batch_size=scored["params_batch_size"].astype(str)),
        x="params_lr",
        y="value",
        hue="batch_size",
        style="state",
        s=60,
        palette="deep",
        hue_order=[str(b) for b in sorted(scored["params_batch_size"].unique())],
        ax=ax,
    )
    ax.set_xscale("log")
    ax.set(title="Val accuracy vs learning rate", xlabel="learning rate", ylabel="val accuracy")
    ax.grid(alpha=0.3, which="both")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return save_figure(fig, path)


def study_plots(df: pd.DataFrame, folder: Path) -> list[Path]:
    """The study's seaborn figures into folder; the paths written.

    Draws val_accuracy_by_optimizer_init.png and val_accuracy_vs_lr.png. A figure whose
    parameters the search space does not vary (no such column), or a study with no scored trial
    yet, is left out.

    df is a trials table as Optuna's ``study.trials_dataframe()`` names its columns:
    - ``number``; ``state`` (COMPLETE, PRUNED, FAIL, RUNNING, ...);
    - ``value``: the trial's best val accuracy, empty when it has none (pruned trials carry their
      last reported value);
    - ``params_<name>`` for each searched parameter; the plots use ``params_lr``,
      ``params_batch_size``, ``params_optimizer`` and ``params_init``;
    - ``duration``: a timedelta, or seconds;
    - optional user attributes the tuner sets: ``user_attrs_epochs_run``,
      ``user_attrs_mlflow_run_id`` (read by write_trials_csv).
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if {"params_optimizer", "params_init"} <= set(df.columns):
        paths.append(accuracy_by_optimizer_init(df, folder / "val_accuracy_by_optimizer_init.png"))
    if {"params_lr", "params_batch_size"} <= set(df.columns):
        paths.append(accuracy_vs_lr(df, folder / "val_accuracy_vs_lr.png"))
    return [p for p in paths if p is not None]


def write_trials_csv(df: pd.DataFrame, path: Path) -> Path:
    """One row per trial: number, state, each param, best_val_accuracy, epochs_run, duration_s,
    mlflow_run_id. df's columns are those study_plots documents; missing optional ones
    (duration, user_attrs_epochs_run, user_attrs_mlflow_run_id) become empty cells.
    """
    out = pd.DataFrame({"number": df["number"], "state": df["state"]})
    for col in sorted(c for c in df.columns if c.startswith("params_")):
        out[col.removeprefix("params_")] = df[col]
    # Accuracies come from float32 tensors; six places drop the noise, not the information.
    # A study with no scored trial has an all-None, object-typed value column.
    out["best_val_accuracy"] = pd.to_numeric(df["value"], errors="coerce").round(6)
    out["epochs_run"] = df.get("user_attrs_epochs_run", pd.Series(pd.NA, index=df.index))
    duration = df.get("duration", pd.Series(pd.NA, index=df.index))
    if pd.api.types.is_timedelta64_dtype(duration):
        duration = duration.dt.total_seconds().round(2)
    out["duration_s"] = duration
    out["mlflow_run_id"] = df.get("user_attrs_mlflow_run_id", pd.Series(pd.NA, index=df.index))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.sort_values("number").to_csv(path, index=False)
    return path


def seed_spread(values: pd.DataFrame, path: Path) -> Path:
    """Each confirmed config's val accuracy over its fresh seeds: a box with every seed as a
    point, one column per config. values has columns config (the column label, in the order
    to draw) and val_accuracy, one row per seed run."""
    order = list(dict.fromkeys(values["config"]))
    fig = Figure(figsize=(max(5.0, 2.2 * len(order) + 1.5), 5), layout="constrained")
    ax = fig.subplots()
    sns.boxplot(
        data=values, x="config", y="val_accuracy", order=order, color="0.9", showfliers=False, ax=ax
    )
    sns.stripplot(
        data=values, x="config", y="val_accuracy", order=order, hue="config", size=7, ax=ax
    )
    ax.set(
        title=f"Val accuracy over fresh seeds ({values.groupby('config').size().max()} per config)",
        xlabel="",
        ylabel="best val accuracy",
    )
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)
