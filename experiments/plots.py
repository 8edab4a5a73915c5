"""Figures for one run, drawn into a folder as PNGs, and the numbers they show.

Pure functions: they read a training result and write files; they know nothing of MLflow.
Figures are built with matplotlib's object API (``Figure``), never pyplot, so no global figure
registry holds them, nothing needs closing, and PNGs go through Agg whatever backend the process
has. Only matplotlib and numpy: every tracked run draws these at its end, and seaborn or
scikit-learn would add their scipy import, about 0.7 s, to each (experiments/study_plots.py
draws a study's figures with seaborn).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
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


def save_figure(fig: Figure, path: Path) -> Path:
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
    cell = _np(labels).astype(np.int64) * n_classes + _np(logits).argmax(axis=1)
    return np.bincount(cell, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


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
        fpr, tpr = _roc(positive, prob[:, i])
        out[name] = Roc(fpr, tpr, float(np.trapezoid(tpr, fpr)))
    return out


def _roc(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score taken as the threshold, highest
    first, from (0, 0): tied scores step together, so the curve and its area do not depend on
    the order of ties."""
    order = np.argsort(-score, kind="stable")
    score, positive = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the end of each tie
    tp = np.cumsum(positive)[last]
    fp = last + 1 - tp
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]


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
    return save_figure(fig, path)


def confusion_heatmap(
    logits: Any, labels: Any, path: Path, classes: Sequence[str] = CLASSES
) -> Path:
    """Counts annotated, colour by row share, so rare and common classes read the same."""
    counts = confusion_counts(logits, labels, len(classes))
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(8.5, 7), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of true class")
    for (t, p), n in np.ndenumerate(counts):
        # Dark cells get white text, as the share that colours them passes the middle.
        color = "white" if share[t, p] > 0.5 else "black"
        ax.text(p, t, str(n), ha="center", va="center", fontsize=8, color=color)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, classes)
    acc = np.trace(counts) / max(counts.sum(), 1)
    ax.set(title=f"Test confusion matrix (accuracy {acc:.4f})", xlabel="predicted", ylabel="true")
    return save_figure(fig, path)


def roc_curves(logits: Any, labels: Any, path: Path, classes: Sequence[str] = CLASSES) -> Path:
    """One-vs-rest ROC per class from softmax scores, AUC in the legend."""
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    palette = matplotlib.colormaps["tab10"]
    for i, (name, roc) in enumerate(roc_by_class(logits, labels, classes).items()):
        if roc is not None:
            ax.plot(roc.fpr, roc.tpr, color=palette(i), lw=1.5, label=f"{name} (AUC {roc.auc:.3f})")
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
    return save_figure(fig, path)


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
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    ax.imshow(tile, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"First conv layer: {n} kernels, {k}x{k}, each scaled to its max |w|")
    return save_figure(fig, path)


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
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(f"Most confident mistakes ({n_wrong} of {len(y)} test images wrong)")
    return save_figure(fig, path)


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
