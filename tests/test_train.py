"""End to end on real FashionMNIST slices: the tracking contract, model reload, kill and resume."""

from __future__ import annotations

import signal
import subprocess
import sys

import mlflow
import pytest
import torch
from conftest import FAST, ROOT, cli_env, run_cli
from mlflow.tracking import MlflowClient

from data_utils import DeviceLoader
from train import dataset, resolve_precision

pytestmark = pytest.mark.slow

CONTRACT_METRICS = {"train_loss", "val_loss", "val_accuracy", "best_val_accuracy",
                    "test_accuracy", "test_loss", "epoch_time_s", "train_images_per_s"}  # fmt: skip


def finished_run(uri: str, out: str) -> mlflow.entities.Run:
    run_id = next(line.split()[-1] for line in out.splitlines() if line.startswith("run_id:"))
    return MlflowClient(uri).get_run(run_id)


def test_one_epoch_run_follows_the_tracking_contract_and_its_model_reloads(store):
    res = run_cli("train.py", *FAST, "--epochs", "1", "--run-name", "contract")
    assert res.returncode == 0, res.stderr
    run = finished_run(store, res.stdout)
    c = MlflowClient(store)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "contract"
    assert set(run.data.metrics) >= CONTRACT_METRICS
    for key in ["lr", "batch_size", "optimizer", "init", "model", "epochs", "seed", "augment"]:
        assert key in run.data.params
    assert run.data.params["model"] == "tutorial_cnn"
    assert run.data.params["precision"] == resolve_precision("auto", torch.device("cpu"))
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    assert run.data.tags["git_commit"] == head.stdout.strip() and len(head.stdout.strip()) == 40
    assert run.data.tags["dataset_md5"] == dataset("").md5
    assert [m.step for m in c.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "train_loss")]
    assert steps == [4, 8] and 1024 // 128 == 8
    files = {a.path for a in c.list_artifacts(run.info.run_id, "checkpoints")}
    assert files == {"checkpoints/last.pt", "checkpoints/best.pt"}
    assert "config.yaml" in {a.path for a in c.list_artifacts(run.info.run_id)}

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
    whole = run_cli("train.py", *args)
    assert whole.returncode == 0, whole.stderr
    reference = finished_run(store, whole.stdout)

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], stdout=subprocess.PIPE, text=True,
        cwd=ROOT, env=cli_env(),
    )  # fmt: skip
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

    resumed = run_cli("train.py", "--resume", run_id)
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
