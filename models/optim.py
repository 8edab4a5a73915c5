"""One factory for optimizers and LR schedules, so every run and trial builds them the same way."""

from __future__ import annotations

import math

import torch
from torch import nn

from models.registry import head

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


# The optimizers that take betas and eps (the Adam family).
ADAM_FAMILY: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
}


def param_groups(model: nn.Module, weight_decay: float, head_lr: float | None = None) -> list[dict]:
    """Decay only the weight matrices and kernels: decaying norms and biases just hurts fit.
    With head_lr, the classifier head (models.head) gets groups of its own at that lr."""
    in_head = {id(p) for p in head(model).parameters()} if head_lr is not None else set()
    groups = []
    for part in [False, True] if head_lr is not None else [False]:
        decay, no_decay = [], []
        for p in model.parameters():
            if p.requires_grad and (id(p) in in_head) == part:
                (decay if p.ndim > 1 else no_decay).append(p)
        lr = {"lr": head_lr} if part else {}
        groups += [
            {"params": decay, "weight_decay": weight_decay, **lr},
            {"params": no_decay, "weight_decay": 0.0, **lr},
        ]
    return groups


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = True,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    head_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """momentum and nesterov reach sgd (rmsprop: momentum), betas and eps the Adam family."""
    # At scale 1 the head stays in the body's two groups, the layout every checkpoint written
    # before head_lr_scale existed holds, so those still resume.
    groups = param_groups(model, weight_decay, lr * head_lr_scale if head_lr_scale != 1 else None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    if name in ADAM_FAMILY:
        return ADAM_FAMILY[name](groups, lr=lr, betas=betas, eps=eps)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    if name == "adadelta":
        return torch.optim.Adadelta(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")


def build_schedule(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule. Warmup is linear from near zero; then constant, cosine or one-cycle."""
    if name == "onecycle":
        # One peak per group, so a head at head_lr_scale keeps its ratio to the body all along.
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        # OneCycleLR divides by each phase's length in steps, so both phases need at least one.
        total = max(total_steps, 3)
        pct = min(max(warmup_steps / total, 0.01, 1.5 / total), 0.99, 1 - 0.5 / total)
        # Momentum (Adam's beta1) stays the configured one: cycling it between 0.85 and 0.95,
        # OneCycleLR's default, would override the value a run sets or a study searches.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lrs,
            total_steps=total,
            pct_start=pct,
            cycle_momentum=False,
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
