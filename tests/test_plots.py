"""Plots: every figure is a real, non-blank image; per-class accuracy is right; runs log them."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAST, ROOT, call_main
from mlflow.tracking import MlflowClient
from PIL import Image
from sklearn.metrics import roc_auc_score

from data_utils import CLASSES
from experiments import plots, study_plots
from experiments.engine import train
from models import build_model
from train import build_parser, config_from_args
from train import main as train_main

RUN_FILES = {"learning_curves.png", "confusion_matrix.png", "roc_curves.png", "misclassified.png"}


def assert_real_image(path: Path, min_size: tuple[int, int] = (300, 200)) -> None:
    with Image.open(path) as img:
        img.verify()  # a truncated or corrupt PNG raises here
    with Image.open(path) as img:
        assert img.width >= min_size[0] and img.height >= min_size[1], (path, img.size)
        pixels = np.asarray(img.convert("L"), dtype=float)
    assert pixels.var() > 0, f"{path} is blank"
    assert path.stat().st_size < 300_000, f"{path} is {path.stat().st_size} bytes"


def synthetic_result(model_name: str, epochs: int = 3) -> SimpleNamespace:
    """A TrainResult look-alike: labels with a known share of right answers, random images."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=g)
    logits = torch.randn(2000, 10, generator=g) + 2.5 * torch.nn.functional.one_hot(labels, 10)
    history = [
        {"train_loss_epoch": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_accuracy": 0.7 + e / 20}
        for e in range(epochs)
    ]
    return SimpleNamespace(
        history=history,
        test_logits=logits,
        test_labels=labels,
        test_images=torch.randint(0, 256, (2000, 28, 28), dtype=torch.uint8, generator=g),
        model=build_model(model_name, width=8),
    )


def test_run_plots_draw_every_figure_for_a_conv_model(tmp_path):
    paths = plots.run_plots(synthetic_result("tutorial_cnn"), tmp_path)
    assert {p.name for p in paths} == RUN_FILES | {"first_conv_kernels.png"}
    assert sorted(paths) == sorted(tmp_path.iterdir())
    for p in paths:
        assert_real_image(p)


def test_mlp_has_no_kernel_grid_and_one_epoch_without_val_still_draws(tmp_path):
    result = synthetic_result("mlp", epochs=1)
    result.history = [{"train_loss_epoch": 0.9}]  # a run with --val-size 0
    paths = plots.run_plots(result, tmp_path)
    assert {p.name for p in paths} == RUN_FILES
    assert not (tmp_path / "first_conv_kernels.png").exists()
    for p in paths:
        assert_real_image(p)


def test_per_class_accuracy_matches_a_hand_count():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 9, 9])
    preds = torch.tensor([0, 0, 5, 1, 0, 2, 9, 3])
    logits = torch.nn.functional.one_hot(preds, 10).float()
    acc = plots.per_class_accuracy(logits, labels)
    assert list(acc) == list(CLASSES)
    assert acc["T-shirt/top"] == pytest.approx(2 / 3)
    assert acc["Trouser"] == 0.5
    assert acc["Pullover"] == 1.0
    assert acc["Ankle boot"] == 0.5
    assert math.isnan(acc["Dress"])  # no Dress in the labels: undefined, not zero
    assert plots.class_slug("T-shirt/top") == "t_shirt_top"
    assert plots.class_slug("Ankle boot") == "ankle_boot"


def test_misclassified_grid_is_absent_when_nothing_is_wrong(tmp_path):
    labels = torch.arange(10)
    logits = torch.nn.functional.one_hot(labels, 10).float()
    images = torch.zeros(10, 28, 28, dtype=torch.uint8)
    assert plots.worst_misclassified(logits, labels, images, tmp_path / "m.png") is None
    assert not (tmp_path / "m.png").exists()


# --- the data behind the figures ----------------------------------------------------------------


def hand_confusion(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    counts = np.zeros((10, 10), dtype=np.int64)
    np.add.at(counts, (labels.numpy(), logits.argmax(1).numpy()), 1)
    return counts


def check_confusion(logits: torch.Tensor, labels: torch.Tensor) -> None:
    counts = plots.confusion_counts(logits, labels)
    assert counts.sum() == len(labels)
    assert counts.sum(axis=1).tolist() == labels.bincount(minlength=10).tolist()
    np.testing.assert_array_equal(counts, hand_confusion(logits, labels))


def check_roc(logits: torch.Tensor, labels: torch.Tensor) -> None:
    rocs = plots.roc_by_class(logits, labels)
    assert list(rocs) == list(CLASSES)
    scores = torch.softmax(logits.double(), dim=1).numpy()
    for i, name in enumerate(CLASSES):
        want = roc_auc_score(labels.numpy() == i, scores[:, i])
        assert rocs[name].auc == pytest.approx(want, abs=1e-12), name


def check_mistakes(logits: torch.Tensor, labels: torch.Tensor, n: int) -> plots.Mistakes:
    m = plots.confident_mistakes(logits, labels, n)
    prob = torch.softmax(logits.double(), dim=1)
    conf, pred = prob.max(dim=1)
    wrong = (pred != labels).nonzero().flatten()
    assert m.n_wrong == len(wrong)
    assert len(m.index) == min(n, len(wrong))
    assert set(m.index.tolist()) <= set(wrong.tolist())
    assert m.pred.tolist() == pred[m.index].tolist()
    np.testing.assert_allclose(m.confidence, conf[m.index].numpy())
    assert all(np.diff(m.confidence) <= 0)  # surest first
    # Nothing left out was surer than the least sure one shown.
    hidden = sorted(set(wrong.tolist()) - set(m.index.tolist()))
    assert not hidden or conf[hidden].max() <= m.confidence.min()
    return m


def test_confusion_counts_are_the_argmax_counts():
    r = synthetic_result("mlp")
    check_confusion(r.test_logits, r.test_labels)
    # Class 3 never occurs and nothing is called 7: a zero row and a zero column, not dropped.
    labels = torch.tensor([0, 0, 1, 2, 9])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 2, 8]), 10).float()
    counts = plots.confusion_counts(logits, labels)
    assert counts.shape == (10, 10)
    assert (counts[0, 0], counts[0, 1], counts[1, 1], counts[2, 2], counts[9, 8]) == (1, 1, 1, 1, 1)
    assert counts.sum() == 5 and counts[3].sum() == 0 and counts[:, 7].sum() == 0


def test_roc_aucs_match_scikit_learn_and_an_absent_class_has_none():
    r = synthetic_result("mlp")
    check_roc(r.test_logits, r.test_labels)
    # Scores that rank every sample of its class first: AUC 1; class 9 is never the label.
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    rocs = plots.roc_by_class(torch.nn.functional.one_hot(labels, 10).float() * 5, labels)
    assert [rocs[CLASSES[i]].auc for i in range(3)] == [1.0, 1.0, 1.0]
    assert rocs["Ankle boot"] is None
    # Each score four times, under different labels: ties step together, as in scikit-learn.
    repeated = r.test_logits[:50].repeat(4, 1)
    check_roc(repeated, torch.randperm(200, generator=torch.Generator().manual_seed(0)) % 10)
    tied = plots.roc_by_class(torch.zeros(4, 10), torch.tensor([0, 0, 1, 1]))["T-shirt/top"]
    assert (tied.fpr.tolist(), tied.tpr.tolist(), tied.auc) == ([0, 1], [0, 1], 0.5)


def test_a_run_draws_its_figures_without_importing_scipy():
    """The per-run figures are drawn at the end of every tracked run; scipy (through seaborn or
    scikit-learn) would add most of a second to each."""
    code = (
        "import sys, experiments.plots as p; print(sorted({'scipy', 'seaborn'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_confident_mistakes_are_the_surest_wrong_answers():
    r = synthetic_result("mlp")
    check_mistakes(r.test_logits, r.test_labels, 24)
    labels = torch.tensor([0, 1, 2, 3, 4])
    # Sample 0 is right; 1, 3 and 4 are wrong with logit margins 1, 3 and 2.
    logits = torch.zeros(5, 10)
    logits[0, 0] = logits[2, 2] = 5.0
    logits[1, 6], logits[3, 7], logits[4, 8] = 1.0, 3.0, 2.0
    m = check_mistakes(logits, labels, 2)
    assert m.index.tolist() == [3, 4] and m.pred.tolist() == [7, 8] and m.n_wrong == 3


@pytest.fixture(scope="module")
def trained():
    """One real run on a FashionMNIST slice, in this process, so its logits can be read."""
    return train(config_from_args(build_parser().parse_args([*FAST, "--epochs", "1"])))


@pytest.mark.slow
def test_plotted_data_of_a_real_run(trained, tmp_path):
    logits, labels = trained.test_logits, trained.test_labels
    assert len(labels) == 10_000
    check_confusion(logits, labels)
    counts = plots.confusion_counts(logits, labels)
    assert counts.sum(axis=1).tolist() == [1000] * 10  # the balanced test set
    assert np.trace(counts) / 10_000 == trained.test_accuracy
    check_roc(logits, labels)
    m = check_mistakes(logits, labels, 24)
    assert len(m.index) == 24  # one epoch on 1k images leaves hundreds of mistakes
    paths = plots.run_plots(trained, tmp_path)
    assert {p.name for p in paths} == RUN_FILES | {"first_conv_kernels.png"}


def synthetic_trials(n: int = 24) -> pd.DataFrame:
    """Shaped like optuna's study.trials_dataframe(), with the user attrs tune.py sets."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "number": range(n),
            "state": rng.choice(["COMPLETE", "PRUNED", "FAIL"], n, p=[0.6, 0.3, 0.1]),
            "value": rng.uniform(0.6, 0.9, n),
            "params_lr": 10 ** rng.uniform(-4, -1, n),
            "params_batch_size": rng.choice([64, 128, 256], n),
            "params_init": rng.choice(["default", "xavier_uniform", "kaiming_normal"], n),
            "params_optimizer": rng.choice(["adam", "sgd", "adamw"], n),
            "duration": pd.to_timedelta(rng.uniform(5, 50, n), unit="s"),
            "user_attrs_epochs_run": rng.integers(1, 5, n),
            "user_attrs_mlflow_run_id": [f"run{i:03d}" for i in range(n)],
        }
    )
    df.loc[df["state"] == "FAIL", "value"] = np.nan
    return df


def test_study_plots_and_trials_csv(tmp_path):
    df = synthetic_trials()
    paths = study_plots.study_plots(df, tmp_path)
    assert {p.name for p in paths} == {
        "val_accuracy_by_optimizer_init.png",
        "val_accuracy_vs_lr.png",
    }
    for p in paths:
        assert_real_image(p)

    csv = pd.read_csv(
        study_plots.write_trials_csv(df.sample(frac=1, random_state=1), tmp_path / "t.csv")
    )
    assert list(csv.columns) == [
        "number",
        "state",
        "batch_size",
        "init",
        "lr",
        "optimizer",
        "best_val_accuracy",
        "epochs_run",
        "duration_s",
        "mlflow_run_id",
    ]
    assert csv["number"].tolist() == list(range(len(df)))
    assert csv["mlflow_run_id"].tolist() == df["user_attrs_mlflow_run_id"].tolist()
    np.testing.assert_allclose(csv["duration_s"], df["duration"].dt.total_seconds(), atol=0.01)
    assert csv["best_val_accuracy"].isna().tolist() == (df["state"] == "FAIL").tolist()


def test_study_plots_skip_what_the_study_cannot_show(tmp_path):
    df = synthetic_trials().drop(columns=["params_init", "user_attrs_epochs_run"])
    assert [p.name for p in study_plots.study_plots(df, tmp_path)] == ["val_accuracy_vs_lr.png"]
    assert study_plots.study_plots(df.assign(state="FAIL", value=np.nan), tmp_path / "none") == []
    csv = pd.read_csv(study_plots.write_trials_csv(df, tmp_path / "t.csv"))
    assert csv["epochs_run"].isna().all()


def test_trials_csv_of_a_study_where_every_trial_was_pruned(tmp_path):
    # Optuna gives an object column of None when no trial has a value (all diverged, say).
    df = synthetic_trials().assign(state="PRUNED", value=None)
    csv = pd.read_csv(study_plots.write_trials_csv(df, tmp_path / "t.csv"))
    assert csv["best_val_accuracy"].isna().all() and len(csv) == len(df)


@pytest.mark.slow
def test_a_real_run_logs_its_plots_and_per_class_accuracy(store, tmp_path):
    res = call_main(train_main, *FAST, "--epochs", "1", "--run-name", "plots")
    assert res.returncode == 0, res.stderr
    run_id = next(
        line.split()[-1] for line in res.stdout.splitlines() if line.startswith("run_id:")
    )
    c = MlflowClient(store)
    names = {Path(a.path).name for a in c.list_artifacts(run_id, "plots")}
    assert names == RUN_FILES | {"first_conv_kernels.png"}
    local = Path(c.download_artifacts(run_id, "plots", str(tmp_path)))
    for name in names:
        assert_real_image(local / name)

    metrics = c.get_run(run_id).data.metrics
    per_class = {k: v for k, v in metrics.items() if k.startswith("test_accuracy_class_")}
    assert set(per_class) == {f"test_accuracy_class_{plots.class_slug(n)}" for n in CLASSES}
    assert all(0 <= v <= 1 for v in per_class.values())
    # The test set is balanced (1000 per class), so the class mean is the overall accuracy.
    assert np.mean(list(per_class.values())) == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_the_parameter_importance_plot_of_a_study_has_a_bar_per_parameter_the_largest_first(
    tmp_path,
):
    import matplotlib.pyplot as plt
    import optuna

    from experiments.tuning.report import OPTUNA_PLOTS

    def objective(trial: optuna.Trial) -> float:
        width = trial.suggest_int("width", 8, 64)
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)  # drawn, never used
        sgd = trial.suggest_categorical("optimizer", ["sgd", "adam"]) == "sgd"
        return 0.7 + width / 400 + 0.01 * sgd

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=16)
    ax = OPTUNA_PLOTS["param_importances"](study)
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert sorted(names) == ["lr", "optimizer", "width"]
    assert len(ax.patches) == 3
    widths = {name: bar.get_width() for name, bar in zip(names, ax.patches, strict=True)}
    assert max(widths, key=widths.get) == "width"  # the one that moved the value most
    assert sum(widths.values()) == pytest.approx(1.0, abs=0.01)  # shares of the variance
    ax.figure.savefig(tmp_path / "param_importances.png", dpi=100)
    plt.close(ax.figure)
    assert_real_image(tmp_path / "param_importances.png")
