"""The CUDA path on a real GPU: bf16 steps, checkpoints, resume, studies sharing a GPU, OOM.

Run with `pytest -m gpu` on a machine with a GPU (benchmarks/gpu_check.sh does); on a machine
without one every test here is skipped.
"""

from __future__ import annotations

import signal
import subprocess

import mlflow
import pytest
import torch
from conftest import FAST, PEAKED, ROOT, kill_at, printed, run_cli
from mlflow.tracking import MlflowClient

from data_utils import DeviceLoader
from experiments.checkpoint import load_checkpoint
from experiments.config import load_config, validate
from experiments.engine import build_training, dataset, evaluate, train_epoch
from experiments.precision import resolve_precision
from models import build_model
from models.losses import build_loss

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = [*FAST, "--device", "cuda"]
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


def test_a_cuda_step_computes_in_bf16_and_keeps_fp32_weights():
    cfg = validate(load_config(None, {"model": "cnn_bn", "width": 16, "device": "cuda"}))
    data, device = dataset(""), torch.device("cuda")
    loader = DeviceLoader(
        data.train_images[:512], data.train_labels[:512], 256, device=device, channels_last=True
    )
    model, opt, sched = build_training(cfg, device, len(loader))
    before = [p.detach().clone() for p in model.parameters()]
    dtypes = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))

    loss_fn = build_loss("cross_entropy")
    precision = resolve_precision(cfg.precision, device, model, loss_fn, 256, 2)  # auto: bf16
    points, step, seen = train_epoch(cfg, model, opt, sched, loss_fn, loader, 0, 0, precision)
    assert (step, seen) == (2, 512)
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert all(torch.isfinite(torch.tensor(v)) for _, v in points)
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("after", ["epoch 4/5", "epoch 5/5"], ids=["middle", "after-last"])
def test_run_killed_on_cuda_resumes_on_cuda_and_tests_its_best_checkpoint(store, after):
    # PEAKED's val accuracy peaks before the last epoch on the CPU; on a GPU it may peak later,
    # and the assertions hold wherever it peaks.
    proc, run_id = kill_at([*PEAKED, "--device", "cuda", "--epochs", "5"], after, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    resumed = run_cli("train.py", "--resume", run_id)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]

    c = MlflowClient(store)
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["device"] == "cuda" and run.data.params["precision"] == "bf16"
    for key in ["val_accuracy", "val_loss", "epoch_time_s"]:
        assert sorted(m.step for m in c.get_metric_history(run_id, key)) == [1, 2, 3, 4, 5], key
    vals = [m.value for m in c.get_metric_history(run_id, "val_accuracy")]
    assert run.data.metrics["best_val_accuracy"] == max(vals)

    # The logged test accuracy is the best checkpoint's, whichever epoch that was.
    best = load_checkpoint(c.download_artifacts(run_id, "checkpoints/best.pt"))
    assert best["best_val_accuracy"] == max(vals)
    model = build_model("tutorial_cnn").to("cuda", memory_format=torch.channels_last)
    model.load_state_dict(best["model"])
    data = dataset("")
    test = DeviceLoader(
        data.test_images, data.test_labels, 256, device="cuda", shuffle=False, channels_last=True
    )
    _, acc, _ = evaluate(model, test, build_loss("cross_entropy"))
    assert acc == pytest.approx(run.data.metrics["test_accuracy"], abs=2e-4)

    # The logged model was trained on the GPU and loads and predicts on the CPU.
    cpu_model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    cpu_test = DeviceLoader(data.test_images, data.test_labels, 1000, shuffle=False)
    with torch.inference_mode():
        right = sum((cpu_model(x).argmax(1) == y).sum().item() for x, y in cpu_test)
    assert right / len(data.test_labels) == pytest.approx(acc, abs=2e-3)


def study(tmp_path, *args: str) -> subprocess.CompletedProcess:
    res = run_cli(
        "tune.py",
        *CUDA,
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--study-name",
        "g",
        "--output-dir",
        str(tmp_path / "out"),
        "--confirm-top",
        "0",
        "--no-baseline",
        *args,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def trial_runs(store: str, parent_run_id: str) -> dict[int, mlflow.entities.Run]:
    c = MlflowClient(store)
    exp = c.get_run(parent_run_id).info.experiment_id
    runs = c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return {int(r.data.tags["optuna_trial_number"]): r for r in runs}


def test_two_workers_share_one_gpu_and_nest_their_trials_under_the_study(store, tmp_path):
    import optuna

    res = study(
        tmp_path,
        "--space",
        str(ROOT / "experiments" / "spaces" / "default.yaml"),
        "--n-trials",
        "4",
        "--workers",
        "2",
        "--gpus",
        "0",
        "--epochs",
        "2",
        "--pruner-startup-trials",
        "2",
    )
    assert "[w0] w0: joined study g" in res.stdout and "[w1] w1: joined study g" in res.stdout
    trials = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    parent = printed(res.stdout, "parent_run_id")
    assert MlflowClient(store).get_run(parent).info.status == "FINISHED"
    runs = trial_runs(store, parent)
    assert sorted(runs) == [0, 1, 2, 3]
    for t in trials:
        assert t.state.name in ("COMPLETE", "PRUNED")
        run = runs[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.data.tags["optuna_state"] == t.state.name
        assert run.info.status == STATUS[t.state.name]
        assert run.data.params["device"] == "cuda"


def test_an_out_of_memory_trial_fails_with_its_reason_and_the_next_one_runs(store, tmp_path):
    import optuna

    space = tmp_path / "oom.yaml"
    space.write_text("width: {type: categorical, choices: [16, 2048]}\n")
    # Random sampler, seed 1: trial 0 draws width 2048, trial 1 width 16; the same worker runs
    # both, in that order. At width 2048 a batch of 50,000 needs 160 GB for its first conv's
    # output alone, more than any GPU has, so the very first allocation fails.
    res = study(
        tmp_path,
        "--space",
        str(space),
        "--sampler",
        "random",
        "--seed",
        "1",
        "--n-trials",
        "2",
        "--epochs",
        "1",
        "--model",
        "cnn_bn",
        "--train-subset",
        "50000",
        "--batch-size",
        "50000",
        "--pruner",
        "none",
    )
    trials = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert [(t.params["width"], t.state.name) for t in trials] == [(2048, "FAIL"), (16, "COMPLETE")]
    runs = trial_runs(store, printed(res.stdout, "parent_run_id"))
    assert runs[0].info.status == "FAILED"
    reason = runs[0].data.tags["optuna_reason"]
    assert "out of GPU memory: model cnn_bn (width 2048), batch size 50000, device cuda" in reason
    assert runs[1].info.status == "FINISHED"
    assert "1 complete, 0 pruned, 1 failed" in res.stdout
