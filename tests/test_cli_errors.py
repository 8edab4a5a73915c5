"""Bad input: exit code 2, a message naming the problem, and no MLflow run left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import FAST, call_main, run_ids
from mlflow.tracking import MlflowClient

from data_utils import FILES, find_data_dir
from experiments.config import Config, to_dict
from models import build_model
from train import main as train_main


def fails_cleanly(store: str, *args: str, says: str) -> str:
    res = call_main(train_main, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert says in res.stderr
    assert "Traceback" not in res.stderr
    assert not Path(store.removeprefix("sqlite:///")).exists() or run_ids(store) == []
    return res.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--lr", "0"], "lr: must be > 0"),
        (["--batch-size", "0"], "batch_size: must be >= 1"),
        (["--epochs", "0"], "epochs: must be >= 1"),
        (["--model", "vgg"], "allowed: cnn_bn, mlp, resnet, stem_cnn, tutorial_cnn"),
        (["--optimizer", "lion"], "allowed: sgd, adam, adamw"),
        (["--init", "he"], "allowed: default, xavier_uniform"),
        (["--loss", "hinge"], "allowed: cross_entropy"),
        (["--precision", "fp16"], "allowed: auto, bf16, fp32"),
        (["--learning-rate", "1"], "unrecognized arguments: --learning-rate"),
    ],
)
def test_bad_flags(store, args, says):
    fails_cleanly(store, *args, says=says)


def test_unknown_yaml_key(store, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lr: 0.1\nnum_layers: 3\n")
    fails_cleanly(store, "--config", str(cfg), says="num_layers")


def test_missing_data_dir(store, tmp_path):
    fails_cleanly(store, "--data-dir", str(tmp_path / "nowhere"), says=str(tmp_path / "nowhere"))


def damaged_copy(tmp_path: Path, how: str) -> Path:
    src = find_data_dir()
    for f in FILES.values():
        shutil.copy(src / f.name, tmp_path / f.name)
    target = tmp_path / FILES["train_labels"].name
    raw = bytearray(target.read_bytes())
    if how == "flip":
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw = raw[: len(raw) // 2]
    target.write_bytes(bytes(raw))
    return target


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_data_file(store, tmp_path, how):
    target = damaged_copy(tmp_path, how)
    err = fails_cleanly(store, *FAST, "--data-dir", str(tmp_path), says=str(target))
    assert FILES["train_labels"].md5 in err


def test_resume_unknown_run(store):
    fails_cleanly(store, "--resume", "0123456789abcdef", says="no MLflow run with id")


def fake_run(store: str, tmp_path: Path, checkpoint: bytes | dict) -> str:
    """A run whose checkpoints/last.pt is whatever the test hands in."""
    c = MlflowClient(store)
    exp = c.create_experiment("bad", artifact_location=(tmp_path / "art").as_uri())
    run_id = c.create_run(exp).info.run_id
    (tmp_path / "ck").mkdir()
    path = tmp_path / "ck" / "last.pt"
    if isinstance(checkpoint, bytes):
        path.write_bytes(checkpoint)
    else:
        torch.save(checkpoint, path)
    c.log_artifact(run_id, str(path), "checkpoints")
    c.set_terminated(run_id, "KILLED")
    return run_id


def checkpoint(model: str, cfg: Config) -> dict:
    """A checkpoint of `model`'s fresh weights that claims to be a run of `cfg` at epoch 1."""
    return {
        "model": build_model(model).state_dict(),
        "optimizer": {},
        "scheduler": {},
        "epoch": 1,
        "step": 8,
        "rng": {},
        "config": to_dict(cfg),
    }


def resume_fails(store: str, run_id: str, says: str) -> None:
    res = call_main(train_main, "--resume", run_id)
    assert res.returncode == 2, res.stdout + res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "KILLED"  # untouched: nothing lost, nothing marked
    assert "checkpoints" in {a.path for a in MlflowClient(store).list_artifacts(run_id)}


def test_checkpoint_that_does_not_match_the_model(store, tmp_path):
    state = checkpoint("mlp", Config(model="tutorial_cnn"))
    resume_fails(store, fake_run(store, tmp_path, state), "does not match model TutorialCNN")


def test_corrupt_checkpoint(store, tmp_path):
    resume_fails(store, fake_run(store, tmp_path, b"not a checkpoint"), "cannot be read")


def test_run_without_checkpoint(store, tmp_path):
    c = MlflowClient(store)
    run_id = c.create_run(c.create_experiment("empty")).info.run_id
    res = call_main(train_main, "--resume", run_id)
    assert res.returncode == 2 and "has no checkpoints/last.pt" in res.stderr


def test_resume_takes_no_flag_but_epochs(store):
    fails_cleanly(
        store,
        "--resume",
        "0123456789abcdef",
        "--lr",
        "0.01",
        "--no-augment",
        "--epochs",
        "9",
        says="--lr, --augment cannot change it (only --epochs can",
    )


def resumable_run(store: str, tmp_path: Path, **config: object) -> str:
    """A run whose last.pt is a real tutorial_cnn checkpoint after epoch 1 of 2."""
    state = checkpoint("tutorial_cnn", Config(model="tutorial_cnn", epochs=2, **config))
    return fake_run(store, tmp_path, state)


@pytest.mark.parametrize(
    ("config", "epochs", "says"),
    [
        ({}, "5", "onecycle schedule spreads its lr curve over 2 epochs, so it cannot be extended"),
        ({"schedule": "cosine"}, "5", "cosine schedule spreads its lr curve over 2 epochs"),
        ({"schedule": "none"}, "1", "the run is 2 epochs long; --resume can extend a run, not"),
    ],
)
def test_resume_epochs_that_cannot_extend_the_run(store, tmp_path, config, epochs, says):
    run_id = resumable_run(store, tmp_path, **config)
    res = call_main(train_main, "--resume", run_id, "--epochs", epochs)
    assert res.returncode == 2, res.stdout + res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr
    assert MlflowClient(store).get_run(run_id).info.status == "KILLED"  # untouched
