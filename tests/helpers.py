"""Helpers shared by the optimizer, loss and study-lifecycle tests (conftest.py holds the rest)."""

from __future__ import annotations

import math

import torch
from torch import nn

from data_utils import normalize
from models.losses import LossFn
from train import dataset


def real_batch(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n FashionMNIST training images, normalized as the loader does, and labels."""
    data = dataset("")
    return normalize(data.train_images[:n].unsqueeze(1)), data.train_labels[:n]


def fit_steps(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
) -> list[float]:
    """The loss before each of `steps` optimizer steps on one batch, each checked to be finite."""
    losses = []
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        assert math.isfinite(loss.item()), losses
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters()}
