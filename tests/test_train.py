"""End to end on real FashionMNIST slices: the tracking contract, model reload, kill, SIGTERM
and resume, parallel runs on a fresh store."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import FAST, PEAKED, ROOT, call_main, cli_env, kill_at, printed, signal_at, start
from mlflow.tracking import MlflowClient
from torch import nn

from data_utils import DeviceLoader
from experiments.callbacks import Callback
from experiments.config import Config
from experiments.engine import dataset, train
from experiments.tracking import MlflowCallback
from train import main as train_main

pytestmark = pytest.mark.slow

CONTRACT_METRICS = {
    "train_loss",
    "val_loss",
    "val_accuracy",
    "best_val_accuracy",
    "test_accuracy",
    "test_loss",
    "epoch_time_s",
    "train_images_per_s",
}


def finished_run(uri: str, out: str) -> mlflow.entities.Run:
    run_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("run_id:"))
    return MlflowClient(uri).get_run(run_id)


def test_one_epoch_run_follows_the_tracking_contract_and_its_model_reloads(store):
    res = call_main(train_main, *FAST, "--epochs", "1", "--run-name", "contract")
    assert res.returncode == 0, res.stderr
    run = finished_run(store, res.stdout)
    c = MlflowClient(store)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "contract"
    assert set(run.data.metrics) >= CONTRACT_METRICS
    for key in ["lr", "batch_size", "optimizer", "init", "model", "epochs", "seed", "augment"]:
        assert key in run.data.params
    assert run.data.params["model"] == "tutorial_cnn"
    experiment = c.get_experiment(run.info.experiment_id)
    assert (
        experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    )  # "Model training"
    # auto, resolved: a run of 8 steps is too short to time bf16 against fp32, on any CPU.
    assert run.data.params["precision"] == "fp32"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    assert run.data.tags["git_commit"] == head.stdout.strip() and len(head.stdout.strip()) == 40
    assert run.data.tags["dataset_md5"] == "f4a8712d7a061bf5bd6d2ca38dc4d50a"  # train-images
    assert [m.step for m in c.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "train_loss")]
    assert steps == [4, 8]  # 1024 images in batches of 128, a point every 4 steps
    files = {a.path for a in c.list_artifacts(run.info.run_id, "checkpoints")}
    assert files == {"checkpoints/last.pt", "checkpoints/best.pt"}
    assert "config.yaml" in {a.path for a in c.list_artifacts(run.info.run_id)}
    # The engine prints the test result as soon as it has it, in the logged metric's value.
    lines = res.stdout.splitlines()
    test_line = next(line for line in lines if line.startswith("test  "))
    assert f"test_accuracy={run.data.metrics['test_accuracy']:.4f}" in test_line
    assert lines.index(test_line) < next(i for i, x in enumerate(lines) if x.startswith("run_id:"))

    ckpt = torch.load(
        c.download_artifacts(run.info.run_id, "checkpoints/last.pt"), weights_only=True
    )
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config"} <= set(ckpt)
    assert (ckpt["epoch"], ckpt["step"], ckpt["config"]["model"]) == (1, 8, "tutorial_cnn")

    # The model is logged as a torch.export program, frozen in eval mode: call it, nothing else.
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    data = dataset("")
    test = DeviceLoader(data.test_images, data.test_labels, 1000, shuffle=False)
    with torch.inference_mode():
        right = sum((model(x).argmax(1) == y).sum().item() for x, y in test)
    acc = right / len(data.test_labels)
    assert acc == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-4)
    assert acc > 0.3  # 8 warmup steps on 1k images: well above chance (0.1)


def test_killed_run_resumes_to_the_same_final_metrics(store):
    args = [*FAST, "--epochs", "3", "--seed", "7"]
    whole = call_main(train_main, *args)
    assert whole.returncode == 0, whole.stderr
    reference = finished_run(store, whole.stdout)

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=cli_env(),
    )
    run_id = None
    for line in proc.stdout:
        if line.startswith("mlflow_run_id:"):
            run_id = line.split()[-1]
        if line.startswith("epoch 1/3"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and run_id
    c = MlflowClient(store)
    assert "test_accuracy" not in c.get_run(run_id).data.metrics

    resumed = call_main(train_main, "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"run_id: {run_id}" in resumed.stdout
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ["test_accuracy", "test_loss", "best_val_accuracy"]:
        assert run.data.metrics[key] == reference.data.metrics[key], key
    for key in ["val_accuracy", "val_loss", "train_loss"]:
        got = [(m.step, m.value) for m in c.get_metric_history(run_id, key)]
        want = [(m.step, m.value) for m in c.get_metric_history(reference.info.run_id, key)]
        assert sorted(got) == sorted(want), key  # every point exactly once, same values


TIMINGS = {"epoch_time_s", "train_images_per_s"}  # the same steps, never the same values


def record(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric's whole history, timings reduced to their steps; system metrics left out:
    they sample the machine, as often as the run lasts."""
    c = MlflowClient(uri)
    out = {}
    for key in c.get_run(run_id).data.metrics:
        if key.startswith("system/"):
            continue
        points = sorted((m.step, m.value) for m in c.get_metric_history(run_id, key))
        out[key] = [(s, 0.0) for s, _ in points] if key in TIMINGS else points
    return out


@pytest.fixture(scope="module")
def peaked(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One uninterrupted 5-epoch PEAKED run: (tracking URI, run id)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('reference')}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        res = call_main(train_main, *PEAKED, "--epochs", "5")
    assert res.returncode == 0, res.stderr
    run_id = finished_run(uri, res.stdout).info.run_id
    val = [v for _, v in record(uri, run_id)["val_accuracy"]]
    assert val.index(max(val)) < 3, val  # the premise: best epoch before the one killed after
    return uri, run_id


@pytest.mark.parametrize("after", ["epoch 4/5", "epoch 5/5"], ids=["middle", "after-last"])
def test_run_killed_after_its_best_epoch_resumes_to_the_uninterrupted_record(
    store, peaked, tmp_path, monkeypatch, after
):
    proc, run_id = kill_at([*PEAKED, "--epochs", "5"], after, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where resume downloads last.pt
    resumed = call_main(train_main, "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert MlflowClient(store).get_run(run_id).info.status == "FINISHED"
    # test_accuracy, best_val_accuracy and every per-epoch metric, each step exactly once
    assert record(store, run_id) == record(*peaked)
    assert not list(tmp_path.glob("fashion-lab-resume-*"))


def test_resume_with_more_epochs_extends_the_run_to_the_uninterrupted_record(store, peaked):
    first = call_main(train_main, *PEAKED, "--epochs", "4")
    assert first.returncode == 0, first.stderr
    run_id = finished_run(store, first.stdout).info.run_id
    more = call_main(train_main, "--resume", run_id, "--epochs", "5")
    assert more.returncode == 0, more.stderr

    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.params["epochs"], run.data.tags["epochs_extended_to"]) == ("4", "5")
    got, want = record(store, run_id), record(*peaked)
    final = {k for k in want if k.startswith("test_") or k == "best_val_accuracy"}
    for key in final:  # the 4-epoch result stays on record at step 4; the new one is at step 5
        assert got[key] == [*[p for p in got[key] if p[0] == 4], *want[key]], key
    assert {k: v for k, v in got.items() if k not in final} == {
        k: v for k, v in want.items() if k not in final
    }


# 64 steps an epoch: epoch 2 is still under way when SIGTERM comes, just after epoch 1's line.
SIGTERMED = [*FAST, "--epochs", "2", "--train-subset", "2048", "--batch-size", "32", "--seed", "5"]


def test_sigterm_drops_the_epoch_under_way_and_resume_gives_the_uninterrupted_record(store):
    whole = call_main(train_main, *SIGTERMED)
    assert whole.returncode == 0, whole.stderr
    reference = finished_run(store, whole.stdout).info.run_id

    # "epoch 1/2" is printed once epoch 1 is checkpointed and logged.
    proc, out, err = signal_at(SIGTERMED, "epoch 1/2", signal.SIGTERM)
    assert proc.returncode == 143, err
    printed_epochs = [x.split()[1] for x in out.splitlines() if x.startswith("epoch ")]
    assert printed_epochs == ["1/2"], "epoch 2 ended before SIGTERM came: nothing was under way"
    run_id = printed(out, "mlflow_run_id")
    c = MlflowClient(store)
    run = c.get_run(run_id)
    assert run.info.status == "KILLED" and run.info.end_time
    assert run.data.tags["stop_reason"].startswith("terminated (SIGTERM)")
    assert "error" not in run.data.tags
    # Epoch 2 is dropped: neither its checkpoint nor its metrics are on record.
    ckpt = torch.load(c.download_artifacts(run_id, "checkpoints/last.pt"), weights_only=True)
    assert ckpt["epoch"] == 1
    assert [m.step for m in c.get_metric_history(run_id, "val_accuracy")] == [1]
    assert "test_accuracy" not in run.data.metrics

    resumed = call_main(train_main, "--resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    epochs = [x.split()[1] for x in resumed.stdout.splitlines() if x.startswith("epoch ")]
    assert epochs == ["2/2"]
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and "stop_reason" not in run.data.tags
    # Every metric per epoch and the test accuracy, as the run never interrupted logged them.
    assert record(store, run_id) == record(store, reference)


def test_four_runs_started_together_on_a_fresh_store_all_succeed(empty_store):
    store = empty_store
    assert not Path(store.removeprefix("sqlite:///")).exists()
    procs = [
        start("train.py", *FAST, "--dry-run", "--run-name", f"p{i}", "--threads", "1")
        for i in range(4)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    c = MlflowClient(store)
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        (f"p{i}", "FINISHED") for i in range(4)
    ]


class Losses(Callback):
    def __init__(self) -> None:
        self.epochs: list[tuple[dict[str, float], list[tuple[int, float]]]] = []

    def on_epoch_end(self, epoch, metrics, train_losses) -> None:
        self.epochs.append((dict(metrics), list(train_losses)))


@pytest.fixture(scope="module")
def no_val_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """In this process: 2 epochs without a validation split, 8 steps each, a train_loss point
    every 3 steps (windows of 3, 3, 2, then 1, 3, 3, 1 steps), the model logged; on a thread
    count other than the process's. Yields (uri, run id, result, losses, threads before, after)."""
    before = torch.get_num_threads()
    cfg = Config(
        threads=before + 1,
        model="tutorial_cnn",
        train_subset=1024,
        batch_size=128,
        val_size=0,
        log_every=3,
        augment=False,
        epochs=2,
    )
    uri = f"sqlite:///{tmp_path_factory.mktemp('no-val')}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        logger, losses = MlflowCallback(cfg), Losses()
        result = train(cfg, [logger, losses])
        yield uri, logger.run_id, result, losses, before, torch.get_num_threads()


def test_a_run_without_validation_logs_no_best_val_accuracy(no_val_run):
    uri, run_id, result, *_ = no_val_run
    metrics = MlflowClient(uri).get_run(run_id).data.metrics
    assert "best_val_accuracy" not in metrics and "test_accuracy" in metrics
    assert result.best_val_accuracy is None


def test_logging_the_model_leaves_the_callers_model_as_it_was(no_val_run):
    _, _, result, *_ = no_val_run
    conv = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)][1]  # 32 in channels
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()


def test_train_gives_the_caller_its_thread_count_back(no_val_run):
    *_, before, after = no_val_run
    assert after == before


def test_train_loss_epoch_weighs_each_log_window_by_its_steps(no_val_run):
    uri, run_id, _, losses, *_ = no_val_run
    first, logged = 0, MlflowClient(uri).get_metric_history(run_id, "train_loss_epoch")
    for (metrics, points), on_record in zip(losses.epochs, logged, strict=True):
        ends = [s for s, _ in points]
        sizes = [b - a for a, b in zip([first, *ends[:-1]], ends, strict=True)]
        weighted = sum(v * n for (_, v), n in zip(points, sizes, strict=True)) / sum(sizes)
        plain = sum(v for _, v in points) / len(points)
        assert metrics["train_loss_epoch"] == pytest.approx(weighted, rel=1e-12)
        assert metrics["train_loss_epoch"] != pytest.approx(plain, rel=1e-6)
        assert on_record.value == metrics["train_loss_epoch"]
        first = points[-1][0]
    assert [s for s, _ in losses.epochs[0][1]] == [3, 6, 8]
