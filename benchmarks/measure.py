"""Repeated measurements: variants alternating round by round, their medians and ratios."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, the spread (min, quartiles, max) and every value."""
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {
        "median": statistics.median(values),
        "min": min(values),
        "q1": q1,
        "q3": q3,
        "max": max(values),
        "n": len(values),
        "values": list(values),
    }


def rounds(
    variants: Mapping[str, Callable[[], float]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Call each variant once per round, `warmup` discarded rounds first, then `repeats` kept.

    Variants alternate within a round, so a change in machine load during the run hits all of
    them alike instead of whichever happened to run last. Each call returns its own measurement
    (seconds, or a rate it timed itself).
    """
    kept: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(warmup + repeats):
        for name, fn in variants.items():
            value = fn()
            if r >= warmup:
                kept[name].append(value)
    return kept


def sync(device: str) -> None:
    """Wait for queued GPU work, so a clock read after it covers the work."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator
