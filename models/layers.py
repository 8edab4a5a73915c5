"""Layers of our own, each holding an nn.Parameter that initialize_weights resets to a neutral
value under every scheme."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LearnedTemperature(nn.Module):
    """Divides the logits by a learned temperature T, kept positive as exp(log_temperature).

    A Linear head could learn the same scale in its weights, but weight decay shrinks them and
    so the logits; a separate undecayed scalar lets the network set how confident its softmax is
    on its own. It starts at T = 1, where it changes nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        # Shape (1,), not a scalar: one-dimensional parameters are spared weight decay.
        self.log_temperature = nn.Parameter(torch.zeros(1))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.log_temperature.zero_()

    @property
    def temperature(self) -> float:
        return self.log_temperature.exp().item()

    def forward(self, logits: Tensor) -> Tensor:
        return logits * torch.exp(-self.log_temperature)
