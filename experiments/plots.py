"""Figures for one run and for one study, drawn into a folder as PNGs.

Pure functions: they read a training result or a trials table and write files; they know nothing
of MLflow or Optuna. Figures are built with matplotlib's object API (``Figure``), never pyplot,
so no global figure registry holds them, nothing needs closing, and PNGs go through Agg whatever
backend the process has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, confusion_matrix, roc_curve
from torch import nn

from data_utils import CLASSES

DPI = 100
MISCLASSIFIED_GRID = (4, 6)  # rows, columns of the worst-misclassified grid
MAX_KERNELS = 64


def _np(x: Any) -> np.ndarray:
    """Tensors (any device) or array-likes to numpy, so callers may pass either."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.cpu().numpy()
    return np.asarray(x)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def class_slug(name: str) -> str:
    """'T-shirt/top' -> 't_shirt_top': a class name fit for a metric key or a file name."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def per_class_accuracy(
    logits: Any, labels: Any, classes: Sequence[str] = CLASSES
) -> dict[str, float]:
    """Accuracy on each true class (its recall), keyed by class name; NaN for an absent class."""
    pred, y = _np(logits).argmax(axis=1), _np(labels)
    out = {}
    for i, name in enumerate(classes):
        mask = y == i
        out[name] = float((pred[mask] == i).mean()) if mask.any() else float("nan")
    return out


def confusion_counts(logits: Any, labels: Any, n_classes: int = len(CLASSES)) -> np.ndarray:
    """counts[t, p]: how many samples of true class t the logits' argmax calls p."""
    return confusion_matrix(_np(labels), _np(logits).argmax(axis=1), labels=range(n_classes))


class Roc(NamedTuple):
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def roc_by_class(
    logits: Any, labels: Any, classes: Sequence[str] = CLASSES
) -> dict[str, Roc | None]:
    """One-vs-rest ROC of each class from softmax scores, keyed by class name; None for a class
    that the labels hold always or never, where ROC is undefined."""
    y, prob = _np(labels), _softmax(_np(logits).astype(np.float64))
    out: dict[str, Roc | None] = {}
    for i, name in enumerate(classes):
        positive = y == i
        if not positive.any() or positive.all():
            out[name] = None
            continue
        fpr, tpr, _ = roc_curve(positive, prob[:, i])
        out[name] = Roc(fpr, tpr, float(auc(fpr, tpr)))
    return out


class Mistakes(NamedTuple):
    index: np.ndarray  # sample indices, most confident mistake first
    pred: np.ndarray  # the class predicted for each
    confidence: np.ndarray  # its softmax probability
    n_wrong: int  # all misclassified samples, shown or not


def confident_mistakes(logits: Any, labels: Any, n: int) -> Mistakes:
    """The n misclassified samples the model was surest of; ties keep sample order."""
    prob = _softmax(_np(logits).astype(np.float64))
    pred, conf = prob.argmax(axis=1), prob.max(axis=1)
    wrong = np.flatnonzero(pred != _np(labels))
    worst = wrong[np.argsort(-conf[wrong], kind="stable")][:n]
    return Mistakes(worst, pred[worst], conf[worst], int(wrong.size))


def learning_curves(history: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Train and val loss by epoch; val accuracy by epoch where the run had a validation split."""
    epochs = np.arange(1, len(history) + 1)
    has_val = any("val_accuracy" in h for h in history)
    fig = Figure(figsize=(10 if has_val else 5.5, 4), layout="constrained")
    axes = fig.subplots(1, 2 if has_val else 1, squeeze=False)[0]

    def series(key: str) -> np.ndarray:
        return np.array([h.get(key, np.nan) for h in history], dtype=float)

    ax = axes[0]
    ax.plot(epochs, series("train_loss_epoch"), marker="o", label="train")
    if has_val:
        ax.plot(epochs, series("val_loss"), marker="o", label="val")
    # Train loss is the configured loss (maybe label-smoothed); val loss is plain cross-entropy.
    ax.set(title="Loss", xlabel="epoch", ylabel="loss")
    ax.legend()
    if has_val:
        axes[1].plot(epochs, series("val_accuracy"), marker="o", color="tab:green")
        axes[1].set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in axes:
        # A 1-2 epoch run would otherwise get fractional epoch ticks.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return _save(fig, path)


def confusion_heatmap(
    logits: Any, labels: Any, path: Path, classes: Sequence[str] = CLASSES
) -> Path:
    """Counts annotated, colour by row share, so rare and common classes read the same."""
    counts = confusion_counts(logits, labels, len(classes))
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(8.5, 7), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(
        share,
        annot=counts,
        fmt="d",
        cmap="Blues",
        vmin=0,
        vmax=1,
        square=True,
        xticklabels=classes,
        yticklabels=classes,
        cbar_kws={"label": "share of true class"},
        annot_kws={"fontsize": 8},
        ax=ax,
    )
    acc = np.trace(counts) / max(counts.sum(), 1)
    ax.set(title=f"Test confusion matrix (accuracy {acc:.4f})", xlabel="predicted", ylabel="true")
    ax.tick_params(axis="x", labelrotation=45)
    return _save(fig, path)


def roc_curves(logits: Any, labels: Any, path: Path, classes: Sequence[str] = CLASSES) -> Path:
    """One-vs-rest ROC per class from softmax scores, AUC in the legend."""
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    palette = sns.color_palette("tab10", len(classes))
    for i, (name, roc) in enumerate(roc_by_class(logits, labels, classes).items()):
        if roc is not None:
            ax.plot(roc.fpr, roc.tpr, color=palette[i], lw=1.5, label=f"{name} (AUC {roc.auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(
        title="Test ROC, one class vs rest",
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def first_conv_kernels(model: nn.Module, path: Path) -> Path | None:
    """The input layer's kernels as one tiled image; None (no file) for a model without Conv2d."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return None
    # Mean over input channels: FashionMNIST has one, so this is each kernel itself.
    w = conv.weight.detach().float().cpu().mean(dim=1)[:MAX_KERNELS].numpy()
    n, k = w.shape[0], w.shape[-1]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    # Each kernel scaled to its own [-1, 1], so small-norm kernels still show their shape.
    w = w / np.maximum(np.abs(w).max(axis=(1, 2), keepdims=True), 1e-12)
    tile = np.full((rows * (k + 1) - 1, cols * (k + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        tile[r * (k + 1) : r * (k + 1) + k, c * (k + 1) : c * (k + 1) + k] = w[i]
    fig = Figure(figsize=(6, 6 * rows / cols + 0.6), layout="constrained")
    ax = fig.subplots()
    cmap = sns.color_palette("vlag", as_cmap=True).with_extremes(bad="white")
    ax.imshow(tile, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"First conv layer: {n} kernels, {k}x{k}, each scaled to its max |w|")
    return _save(fig, path)


def worst_misclassified(
    logits: Any, labels: Any, images: Any, path: Path, classes: Sequence[str] = CLASSES
) -> Path | None:
    """The most confidently wrong test images; None (no file) if nothing is misclassified."""
    rows, cols = MISCLASSIFIED_GRID
    y, imgs = _np(labels), _np(images)
    worst, pred, conf, n_wrong = confident_mistakes(logits, labels, rows * cols)
    if n_wrong == 0:
        return None
    # One image holding every tile, captions in a band above each: 24 separate axes would cost
    # most of a second to lay out.
    side, gap, band = imgs.shape[-1], 4, 9
    cell_w, cell_h = side + gap, side + band
    mosaic = np.full((rows * cell_h, cols * cell_w), np.nan)
    fig = Figure(figsize=(cols * 1.6, cols * 1.6 * rows * cell_h / (cols * cell_w) + 0.5))
    ax = fig.add_axes((0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    for k, i in enumerate(worst):
        r, c = divmod(k, cols)
        top, left = r * cell_h + band, c * cell_w + gap // 2
        mosaic[top : top + side, left : left + side] = imgs[i]
        caption = f"true: {classes[y[i]]}\npred: {classes[pred[k]]} {conf[k]:.0%}"
        ax.text(left + side / 2, top - 1, caption, ha="center", va="bottom", fontsize=8)
    cmap = sns.color_palette("gray_r", as_cmap=True).with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(f"Most confident mistakes ({n_wrong} of {len(y)} test images wrong)")
    return _save(fig, path)


def run_plots(result: Any, folder: Path) -> list[Path]:
    """Every per-run figure for a train.TrainResult (duck-typed) into folder; the paths written.

    Reads result.history, .test_logits, .test_labels, .test_images and .model. Files:
    learning_curves.png, confusion_matrix.png, roc_curves.png, misclassified.png, and
    first_conv_kernels.png for models with a Conv2d.
    """
    folder.mkdir(parents=True, exist_ok=True)
    logits, labels = result.test_logits, result.test_labels
    paths = [
        learning_curves(result.history, folder / "learning_curves.png"),
        confusion_heatmap(logits, labels, folder / "confusion_matrix.png"),
        roc_curves(logits, labels, folder / "roc_curves.png"),
        first_conv_kernels(result.model, folder / "first_conv_kernels.png"),
        worst_misclassified(logits, labels, result.test_images, folder / "misclassified.png"),
    ]
    return [p for p in paths if p is not None]


# --- per study ------------------------------------------------------------------------------


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)
