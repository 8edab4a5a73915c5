"""The README's speed tables, written from the result files they quote.

    python -m benchmarks.readme [--check] [README]    (default: the repository's README.md)

LINES names each row the README shows: its label, the result file, and the row of that file
whose `measure` starts with the given text. Rows are grouped into one table per machine the
results name (CPU and its kind, GPU), under a line naming it, between the README's
`<!-- speed-tables:start -->` and `<!-- speed-tables:end -->` markers. A line whose result file
or row is missing (not measured yet, or measured by an older version of its benchmark) is left
out and named. `--check` writes nothing and exits 1 if the README differs from what the results
give.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from benchmarks.machine import AVX2, label
from benchmarks.publish import fmt

START, END = "<!-- speed-tables:start -->", "<!-- speed-tables:end -->"
HEADER = ["measure", "ours", "tutorial", "ratio", "target", "source"]


def accuracy(recipe: str) -> Callable[[Mapping[str, Any]], str]:
    """The test accuracy of a time_to_accuracy recipe's first run, as a note."""
    return lambda d: f"{d['details']['recipes'][recipe]['runs'][0]['test_accuracy']:.2%}"


def spread(key: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda d: f"{fmt(d['details'][key]['min'])}–{fmt(d['details'][key]['max'])}"


@dataclass(frozen=True)
class Line:
    label: str
    source: str  # results/<source>.json
    measure: str  # the start of the row's `measure`
    note: Callable[[Mapping[str, Any]], str] | None = None  # shown in brackets after ours


LINES = [
    Line(
        "Loader throughput: normalized batches of 256 (median, min–max)",
        "loader",
        "images/s, no augmentation",
        spread("ours"),
    ),
    Line("Training throughput: `tutorial_cnn`, batch 256", "throughput", "training images/s"),
    Line(
        "Time to test accuracy: process start to 91% (`experiments/configs/speedrun.yaml`)",
        "time_to_accuracy",
        "wall s from process start to 91%",
    ),
    Line(
        "The same run: process start to exit (plots, model upload and the run's end included)",
        "time_to_accuracy",
        "cross-check: wall s from process start to exit, speedrun.yaml",
    ),
    Line(
        "Time to test accuracy: process start to 93% (`experiments/configs/speedrun93.yaml`)",
        "time_to_accuracy",
        "wall s from process start to 93%",
        accuracy("experiments/configs/speedrun93.yaml"),
    ),
    Line(
        "`make train`: start to exit (test accuracy)",
        "make",
        "make train: wall time",
        lambda d: f"{d['details']['train_test_accuracy']['median']:.2%}",
    ),
    Line(
        "`make tune`: start to exit (trials, best val accuracy)",
        "make",
        "make tune: wall time",
        lambda d: (
            f"{fmt(d['details']['tune_trials']['median'])} trials, "
            f"{d['details']['tune_best_val_accuracy']['median']:.2%}"
        ),
    ),
    Line(
        "`make tune`: start to exit, this tree vs an earlier revision (`bench_make --against`)",
        "make_against",
        "make tune: wall time here vs at",
        lambda d: (
            f"vs {d['details']['against']['revision']}; best val accuracy "
            f"{d['details']['tune_best_val_accuracy']['median']:.2%} vs "
            f"{d['details']['against']['tune_best_val_accuracy']['median']:.2%}"
        ),
    ),
    Line(
        "MLflow tracking overhead: all it adds to the default run",
        "tracking_overhead",
        "tracking a run as train.py does",
    ),
    Line(
        "MLflow tracking overhead: the same for a short run (`--config`, with `--against REV`)",
        "tracking_overhead_against",
        "tracking a run as train.py does",
        lambda d: f"{d['details']['runs'][0]['epochs']} epochs",
    ),
    Line("Peak memory of a training run: PSS of the process tree", "memory", "peak PSS"),
    Line(
        "Peak memory of a training run: RSS of the process tree (shared pages once per process)",
        "memory",
        "peak RSS",
    ),
    Line("An Optuna study: 12 trials, median pruner vs none", "study", "trials per hour"),
    Line("An Optuna study: best val accuracy, the same two studies", "study", "best val accuracy"),
]
# The time-to-accuracy rows again from a run with torch held to AVX2 (machine.ISA_CAPS): on a
# machine with AVX-512, the stand-in for one without. Their own result file, their own table,
# after the uncapped one.
CAPPED_SOURCES = ("time_to_accuracy",)
LINES += [
    replace(line, source=f"{line.source}_{AVX2}") for line in LINES if line.source in CAPPED_SOURCES
]
LINES += [
    Line("Training throughput: `tutorial_cnn`, batch 256", "throughput_cuda", "training images/s"),
    Line("Training throughput: `resnet`, batch 256", "throughput_cuda_resnet", "training images/s"),
    Line(
        "Time to test accuracy: in `train()` to 93% (`experiments/configs/gpu_speedrun.yaml`)",
        "time_to_accuracy_cuda",
        "s in train() to 93%",
        accuracy("experiments/configs/gpu_speedrun.yaml"),
    ),
    Line(
        "Time to test accuracy: in `train()` to 94% (`experiments/configs/gpu_speedrun94.yaml`)",
        "time_to_accuracy_cuda",
        "s in train() to 94%",
        accuracy("experiments/configs/gpu_speedrun94.yaml"),
    ),
]


def cells(line: Line, data: Mapping[str, Any], row: Mapping[str, Any]) -> list[str]:
    ours = fmt(row["ours"], row["unit"]) + (f" ({line.note(data)})" if line.note else "")
    verdict = {True: ": met", False: ": missed", None: ""}[row["met"]]
    target = f"{row['target']}{verdict}" if row["target"] else ""
    return [
        line.label,
        ours,
        "" if row["baseline"] is None else fmt(row["baseline"], row["unit"]),
        "" if row["ratio"] is None else f"{row['ratio']:.2f}×",
        target,
        f"[`{line.source}`](benchmarks/results/{line.source}.json)",
    ]


def tables(results: Path) -> tuple[str, list[str]]:
    """The markdown between the markers, and the LINES left out (with why)."""
    groups: dict[str, list[list[str]]] = {}
    missing = []
    for line in LINES:
        path = results / f"{line.source}.json"
        if not path.exists():
            missing.append(f"{line.label}: {path.name} missing")
            continue
        data = json.loads(path.read_text())
        row = next((r for r in data["rows"] if r["measure"].startswith(line.measure)), None)
        if row is None:
            missing.append(f"{line.label}: no row {line.measure!r} in {path.name}")
            continue
        groups.setdefault(label(data["machine"]), []).append(cells(line, data, row))
    out = []
    for machine, rows in groups.items():
        out += [f"On {machine}:", "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * 6]
        out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return "\n".join(out).rstrip(), missing


def rewrite(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"the README has no {START} ... {END} markers")
    before, rest = text.split(START, 1)
    return f"{before}{START}\n{block}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.readme",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("readme", nargs="?", type=Path, default=ROOT / "README.md")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if out of date")
    args = p.parse_args(argv)
    block, missing = tables(args.readme.parent / "benchmarks" / "results")
    text = args.readme.read_text()
    try:
        new = rewrite(text, block)
    except ValueError as e:
        print(f"error: {args.readme}: {e}", file=sys.stderr)
        return 2
    for line in missing:
        print(f"left out: {line}")
    if args.check:
        if new != text:
            print(f"{args.readme}: its speed tables differ from the results; run {p.prog}")
            return 1
        return 0
    args.readme.write_text(new)
    print(f"wrote the speed tables of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
