"""One factory for optimizers and LR schedules, so every run and trial builds them the same way."""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "nadam",
    "radam",
    "adagrad",
    "adadelta",
    "adamax",
)
SCHEDULES: tuple[str, ...] = ("none", "cosine", "onecycle")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay only the weight matrices and kernels: decaying norms and biases just hurts fit."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    classes = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "nadam": torch.optim.NAdam,
        "radam": torch.optim.RAdam,
        "adagrad": torch.optim.Adagrad,
        "adadelta": torch.optim.Adadelta,
        "adamax": torch.optim.Adamax,
    }
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    return classes[name](groups, lr=lr)


def build_schedule(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule. Warmup is linear from near zero; then constant, cosine or one-cycle."""
    if name == "onecycle":
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        pct = min(max(warmup_steps / max(total_steps, 1), 0.01), 0.99)
        # OneCycleLR cycles momentum, which fails on optimizers built without any.
        cycle = optimizer.defaults.get("momentum", 0) > 0 or "betas" in optimizer.defaults
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lrs,
            total_steps=max(total_steps, 2),
            pct_start=pct,
            cycle_momentum=cycle,
        )
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "none":
            return 1.0
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
