"""Helpers shared by test files: a study's arguments and storage, optimizer and loss fits."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import torch
from conftest import FAST
from mlflow.tracking import MlflowClient
from torch import nn

from data_utils import normalize
from experiments.engine import dataset
from models import build_model
from models.losses import build_loss
from models.optim import build_optimizer


def study_args(tmp_path: Path, name: str = "t") -> list[str]:
    return [
        *FAST,
        "--storage",
        f"sqlite:///{tmp_path}/optuna.db",
        "--study-name",
        name,
        "--output-dir",
        str(tmp_path / "out"),
        "--confirm-top",  # seed confirmation has tests of its own; these study the search
        "0",
        "--no-baseline",  # so has the baseline: here every trial is the sampler's
    ]


def load(tmp_path: Path, name: str = "t") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")


def children(uri: str, parent_run_id: str) -> list:
    c = MlflowClient(uri)
    exp = c.get_run(parent_run_id).info.experiment_id
    return c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def fit_steps(
    optimizer: str,
    loss: str,
    lr: float,
    weight_decay: float = 0.0,
    steps: int = 1,
    real: bool = False,
) -> tuple[nn.Module, dict[str, torch.Tensor], list[float]]:
    """`steps` steps of a small tutorial_cnn on one batch: the model, its parameters before, and
    the loss before each step (each checked finite). The batch is 16 made-up images, or with
    real=True the first 128 FashionMNIST training images, normalized as the loader does."""
    torch.manual_seed(0)
    if real:
        data = dataset("")
        x, y = normalize(data.train_images[:128].unsqueeze(1)), data.train_labels[:128]
        model = build_model("tutorial_cnn", width=4).eval()  # no dropout: losses comparable
    else:
        x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
        model = build_model("tutorial_cnn", width=2)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    opt = build_optimizer(model, optimizer, lr, weight_decay)
    loss_fn = build_loss(loss)
    losses: list[float] = []
    for _ in range(steps):
        value = loss_fn(model(x), y)
        assert math.isfinite(value.item()), losses
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        losses.append(value.item())
    return model, before, losses


def stuck_after_one_step(optimizer: str, loss: str, lr: float, weight_decay: float = 0.0) -> list:
    """The parameters that one step on a made-up batch left unchanged or made non-finite."""
    model, before, _ = fit_steps(optimizer, loss, lr, weight_decay)
    return [
        n
        for n, p in model.named_parameters()
        if torch.equal(p, before[n]) or not torch.isfinite(p).all()
    ]


def real_batch_losses(optimizer: str, loss: str, lr: float, weight_decay: float = 0.0) -> list:
    """The loss before each of ten steps on one batch of real images."""
    return fit_steps(optimizer, loss, lr, weight_decay, steps=10, real=True)[2]
