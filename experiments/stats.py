"""The statistics that decide whether one config beats another beyond seed noise: plain
functions of lists of accuracies, one per seed. A study's confirmation and the Model Registry
judge by the same ones."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # a config whose Welch p against another is below this differs beyond seed noise


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The mean and its t-distribution confidence interval (low, high); two values or more."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError(f"a confidence interval needs 2 values or more, got {len(x)}")
    mean = float(x.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


class Gain(NamedTuple):
    points: float  # mean of a minus mean of b, in percentage points
    low: float  # its 95% confidence interval (Welch-Satterthwaite degrees of freedom)
    high: float
    p: float  # Welch's two-sided p-value; NaN when both are one constant

    def __str__(self) -> str:
        return (
            f"{self.points:+.2f} points (95% CI [{self.low:+.2f}, {self.high:+.2f}], "
            f"Welch p = {self.p:.3g})"
        )

    def beyond_noise(self) -> bool:
        return self.points > 0 and self.p < ALPHA


def gain(a: Sequence[float], b: Sequence[float]) -> Gain:
    """How much a's accuracies beat b's, in points, with the interval and the p-value of
    Welch's t-test (variances not assumed equal); two values or more each."""
    with warnings.catch_warnings():
        # Near-identical samples make scipy warn of precision loss; the p-value still stands.
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(a, b, equal_var=False)
        low, high = test.confidence_interval(CONFIDENCE)
    diff = 100 * (float(np.mean(a)) - float(np.mean(b)))
    return Gain(diff, 100 * float(low), 100 * float(high), float(test.pvalue))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test. NaN when both samples are the same constant: no
    spread to judge a difference by, and no difference."""
    return gain(a, b).p
