"""Checkpoints: plain dicts written atomically and read back with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Temp file then os.replace, so a kill mid-write never leaves a torn checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from None
    missing = {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {sorted(missing)}; it is not ours")
    return state


def restore_model(model: nn.Module, state: dict[str, Any], source: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[1:3] or [str(e)]
        raise CheckpointError(
            f"checkpoint {source} does not match model {type(model).__name__}: "
            f"{' '.join(s.strip() for s in first)}"
        ) from None
