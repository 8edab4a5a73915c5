"""Every figure a result shows, derived from the raw samples it keeps, one function per benchmark.

The same derivation writes a result's summary when it is measured, checks that summary at every
check, and renders RESULTS.md and the README: no figure is typed, and every verdict (met or
missed) comes from its target, judged on the median and on each run.
"""

from __future__ import annotations

import math
import operator
import re
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.stats import gain as stats_gain

INF = math.inf
COMPARE = {"≥": operator.ge, "≤": operator.le, "<": operator.lt, ">": operator.gt}


@dataclass(frozen=True)
class Figure:
    label: str
    unit: str  # as shown: "s", "%", "×", "img/s", "GiB", "min", "points", "" (a plain number)
    runs: Sequence[float]  # one value per run (inf: it never got there); the median is shown
    target: str = ""  # a comparison and a bound in the figure's unit: "≥ 100×", "< 0.05"

    @property
    def value(self) -> float:
        return statistics.median(self.runs) if self.runs else math.nan

    def meets(self, x: float) -> bool:
        bound = float(re.search(r"[-+]?\d+(?:\.\d+)?", self.target)[0])
        return COMPARE[self.target.split()[0]](x, bound)

    def verdict(self) -> str:
        """'≥ 100×: met (median; 14 of 15 runs)': the median decides, the runs are counted."""
        if not self.target:
            return ""
        word = "met" if self.meets(self.value) else "missed"
        if len(self.runs) == 1:
            return f"{self.target}: {word} (1 run)"
        of = f"{sum(map(self.meets, self.runs))} of {len(self.runs)} runs"
        return f"{self.target}: {word} (median; {of})"

    def text(self, value: float | None = None) -> str:
        """The median (or value) with its unit, as the README shows it."""
        x = self.value if value is None else value
        if math.isinf(x):
            return "never"
        gap = "" if self.unit in ("%", "×", "") else " "
        return f"{number(x, self.unit)}{gap}{self.unit}".strip()

    def spread(self) -> str:
        """The range of the runs, "21.5–24.0 s"; "" for a single run."""
        if len(self.runs) < 2:
            return ""
        low, high = min(self.runs), max(self.runs)
        return f"{number(low, self.unit)}–{self.text(high)}"


def number(x: float, unit: str) -> str:
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "never"
    if unit == "img/s":
        if abs(x) >= 1e4:  # three significant digits: 2.07 M, 15.9 k
            return f"{x / 1e6:.3g} M" if abs(x) >= 999_500 else f"{x / 1e3:.3g} k"
        return f"{x:,.0f}"
    if unit == "×":  # three significant digits, at most two decimals
        return f"{x:.{min(2, max(0, 2 - math.floor(math.log10(abs(x) or 1))))}f}"
    if unit == "points":
        return f"{x:+.2f}"
    if unit in ("%", "GiB"):
        return f"{x:.2f}"
    if unit == "":
        return f"{x:.2g}"
    return f"{x:.1f}" if abs(x) >= 10 or unit == "min" else f"{x:.2f}"


def pairs(a: Sequence[float], b: Sequence[float], f: Callable[[float, float], float]) -> list:
    """f of each run's two values: the runs of a ratio are the ratios of each round's pair."""
    return [f(x, y) for x, y in zip(a, b, strict=True)]


def over(x: float, y: float) -> float:
    return x / y if y and not (math.isinf(x) and math.isinf(y)) else math.nan


def table(figures: Mapping[str, Figure]) -> list[str]:
    """Markdown: every figure with its median, range, runs and verdict."""
    out = ["| figure | key | median | range | runs | target |", "|" + " --- |" * 6]
    for key, f in figures.items():
        out.append(
            f"| {f.label} | `{key}` | {f.text()} | {f.spread()} | {len(f.runs)} | {f.verdict()} |"
        )
    return out


# ---------------------------------------------------------------------------------------------
# One derivation per benchmark: samples -> {key: Figure}.


def loader(s: Mapping[str, Any]) -> dict[str, Figure]:
    ours, aug, tutorial = s["ours"], s["ours_augment"], s["tutorial"]
    return {
        "ours": Figure("Loader: ours", "img/s", ours),
        "ours_augment": Figure("Loader: ours, crop+flip", "img/s", aug),
        "tutorial": Figure("Loader: tutorial", "img/s", tutorial),
        "ratio": Figure("Loader: ours / tutorial", "×", pairs(ours, tutorial, over), "≥ 100×"),
        "ratio_augment": Figure("Loader: crop+flip / tutorial", "×", pairs(aug, tutorial, over)),
    }


# Ablations of our training loop: (variant, the variant it is compared with, what differs).
ABLATIONS = (
    ("bf16", "fp32", "bf16 / fp32"),
    ("channels_last", "contiguous", "channels_last / contiguous"),
)


def throughput(s: Mapping[str, Any]) -> dict[str, Figure]:
    on_target = s["device"] == "cpu" and s["model"] == "tutorial_cnn"
    what = "Training" + ("" if s["model"] == "tutorial_cnn" else f" `{s['model']}`")
    f = {
        "ours": Figure(f"{what}: ours", "img/s", s["ours"]),
        "tutorial": Figure(f"{what}: tutorial", "img/s", s["tutorial"]),
        "ratio": Figure(
            f"{what}: ours / tutorial",
            "×",
            pairs(s["ours"], s["tutorial"], over),
            "≥ 2×" if on_target else "",
        ),
    }
    for a, b, what in ABLATIONS:
        if a in s and b in s:
            f[f"{a}_vs_{b}"] = Figure(f"Training ablation: {what}", "×", pairs(s[a], s[b], over))
    return f


def tta(s: Mapping[str, Any]) -> dict[str, Figure]:
    """Per recipe: the time to its target (a run that missed the target never got there), its
    test accuracy and its exit; with the tutorial run to the same target, the tutorial's time
    over ours."""
    f: dict[str, Figure] = {}
    process = s["limit_on"] == "process"
    tutorial = s.get("tutorial")
    if tutorial:
        theirs = [INF if r["time_s"] is None else r["time_s"] for r in tutorial["runs"]]
        f["tutorial_s"] = Figure(f"Tutorial to {tutorial['target']:.0%}", "s", theirs)
    for r in s["recipes"]:
        key, target, runs = r["name"], r["target"], r["runs"]
        timed = [run["test_line_s"] if process else run["train_s"] for run in runs]
        ours = [
            t if run["test_accuracy"] >= target else INF for t, run in zip(timed, runs, strict=True)
        ]
        to = f"`{key}` to {target:.0%}" + ("" if process else ", train()")
        f[f"{key}_s"] = Figure(to, "s", ours, f"≤ {r['limit_s']:g} s")
        accs = [100 * run["test_accuracy"] for run in runs]
        f[f"{key}_accuracy"] = Figure(f"`{key}`: test accuracy", "%", accs)
        f[f"{key}_exit_s"] = Figure(f"`{key}`: start to exit", "s", [x["exit_s"] for x in runs])
        if tutorial and tutorial["target"] == target and process:
            what = f"Tutorial / `{key}`, to {target:.0%}"
            f[f"{key}_ratio"] = Figure(what, "×", pairs(theirs, ours, over), "≥ 10×")
    return f


# What tracking adds to a run, timed inside the tracked process, in the order it happens.
PARTS = {
    "import_s": "importing the tracking code (mlflow)",
    "start_s": "the run's start (the run, params, datasets)",
    "per_epoch_s": "per-epoch metrics and checkpoints",
    "end_s": "the run's end (plots, model upload, final metrics, status)",
}


def tracking(s: Mapping[str, Any]) -> dict[str, Figure]:
    base = s["untracked_s"]
    total = [sum(s[p][i] for p in PARTS) for i in range(len(base))]
    once = [t - e for t, e in zip(total, s["per_epoch_s"], strict=True)]
    pct = pairs(total, base, lambda a, b: 100 * a / b)
    ab = pairs(s["process_s"], base, lambda a, b: 100 * (a - b) / b)
    return {
        "pct": Figure("Tracking, % of train()", "%", pct, "≤ 1%"),
        **{p: Figure(f"Tracking: {what}", "s", s[p]) for p, what in PARTS.items()},
        "once_s": Figure("Tracking: its once-per-run costs", "s", once),
        "break_even_min": Figure(
            "Tracking: train() that brings the once-per-run costs to 1%",
            "min",
            [o / 0.01 / 60 for o in once],
        ),
        "ab_pct": Figure("Tracking, A/B: tracked process over untracked train(), %", "%", ab),
    }


def memory(s: Mapping[str, Any]) -> dict[str, Figure]:
    f = {}
    for kind in ("pss", "rss"):
        ours, theirs, what = s[f"ours_{kind}"], s[f"tutorial_{kind}"], f"Peak {kind.upper()}"
        target = "≤ 1 GiB" if kind == "pss" else ""
        f[f"ours_{kind}"] = Figure(f"{what}: ours", "GiB", ours, target)
        f[f"tutorial_{kind}"] = Figure(f"{what}: tutorial", "GiB", theirs)
        f[f"{kind}_ratio"] = Figure(f"{what}: tutorial / ours", "×", pairs(theirs, ours, over))
    for floor in s["floors"]:
        what = f"Peak RSS of an interpreter that stops after {floor['stage']}"
        f[f"floor_{floor['key']}"] = Figure(what, "GiB", [floor["gib"]])
    return f


def tune(s: Mapping[str, Any]) -> dict[str, Figure]:
    from scipy import stats

    train, flow, rungs, rung = s["train"], s["flow"], s["rungs"], s["prune_from_epoch"]
    accs = [100 * r["test_accuracy"] for r in train]
    train_s = [r["train_s"] for r in train]
    champion = 100 * flow["champion_test_accuracy"]
    gain, low, high, p = stats_gain(flow["challenger"], flow["baseline"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant side: NaN says it
        rho = stats.spearmanr([r["at_rung"] for r in rungs], [r["final"] for r in rungs])[0]
    multiple = (flow["tune_s"] + flow["retrain_s"]) / statistics.median(train_s)
    diff = champion - statistics.median(accs)
    return {
        "train_accuracy": Figure("`make train`: test accuracy", "%", accs),
        "train_s": Figure("`make train`: train()", "s", train_s),
        "train_exit_s": Figure("`make train`: start to exit", "s", [r["wall_s"] for r in train]),
        "tune_s": Figure("`make tune`, empty store: start to exit", "s", [flow["tune_s"]]),
        "retrain_s": Figure("`make tune ARGS=--retrain-best`", "s", [flow["retrain_s"]]),
        "flow_multiple": Figure("Tuning flow / `make train`'s train()", "×", [multiple], "≤ 30×"),
        "champion_accuracy": Figure("Champion: test accuracy", "%", [champion]),
        "champion_gain": Figure(
            "Champion − `make train` accuracy", "points", [diff], "≥ +0.3 points"
        ),
        "gain": Figure("Challenger − baseline, val accuracy", "points", [gain]),
        "gain_ci_low": Figure("Challenger − baseline: 95% interval, low", "points", [low]),
        "gain_ci_high": Figure("Challenger − baseline: 95% interval, high", "points", [high]),
        "gain_p": Figure("Challenger − baseline: Welch's p", "", [p], "< 0.05"),
        "rung_rho": Figure(
            f"Val accuracy at epoch {rung} vs at the end: Spearman's rho, {len(rungs)} trials",
            "",
            [float(rho)],
        ),
    }


DERIVE: dict[str, Callable[[Mapping[str, Any]], dict[str, Figure]]] = {
    "loader": loader,
    "throughput": throughput,
    "tta": tta,
    "tracking": tracking,
    "memory": memory,
    "tune": tune,
}
# Figures without a target that the README's tables show all the same.
HEADLINE = {"throughput": ("ratio",), "tune": ("train_accuracy", "gain", "rung_rho")}


def derive(benchmark: str, samples: Mapping[str, Any]) -> dict[str, Figure]:
    return DERIVE[benchmark](samples)


def headline(benchmark: str, figures: Mapping[str, Figure]) -> list[str]:
    """The keys of the figures a README table shows: those with a target, and HEADLINE's."""
    extra = HEADLINE.get(benchmark, ())
    return [k for k, f in figures.items() if f.target or k in extra]
