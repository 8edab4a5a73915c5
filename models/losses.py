"""Training losses by name. Each maps (logits [B, C], integer targets [B]) to a scalar."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]
LOSSES: tuple[str, ...] = ("cross_entropy", "nll", "multi_margin", "bce", "mse")


def build_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    """cross_entropy is the default; the others are the torch.nn losses that fit 10 classes."""
    if name == "cross_entropy":
        return lambda x, y: F.cross_entropy(x, y, label_smoothing=label_smoothing)
    if name == "nll":
        return lambda x, y: F.nll_loss(F.log_softmax(x, dim=1), y)
    if name == "multi_margin":
        return F.multi_margin_loss
    if name == "bce":
        # One-vs-rest: each class is its own sigmoid, as in multi-label setups.
        return lambda x, y: F.binary_cross_entropy_with_logits(x, _one_hot(x, y))
    if name == "mse":
        # Brier score on the softmax probabilities.
        return lambda x, y: F.mse_loss(x.softmax(dim=1), _one_hot(x, y))
    raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")


def _one_hot(logits: Tensor, targets: Tensor) -> Tensor:
    return F.one_hot(targets, logits.shape[1]).to(logits.dtype)
