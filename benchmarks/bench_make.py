"""The README's two entry points as a user runs them: `make train` and `make tune`, start to exit.

Each runs in the repository root (or `--repo DIR`) with its venv already there, so the setup step
only checks it: the wall time is `make`'s own, from just before spawn to exit, the data check
included. Each gets its own throwaway MLflow store (`MLFLOW_TRACKING_URI`); the study gets its own
Optuna storage and output folder through the Makefile's `ARGS`. From their output: the test
accuracy `make train` prints, and the trials counted and the best val accuracy `make tune` prints.

`--against REV` runs both targets at git revision REV too, in a temporary worktree of it with this
checkout's interpreter, alternating with this checkout's, and gives REV's times over ours.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from benchmarks.measure import ratio, summary
from benchmarks.process import (
    SMOKE_CONFIG,
    TRAIN_SMOKE,
    prepare_store,
    run_process,
    script_env,
    tune_summary,
)
from benchmarks.publish import Row, parse, parser, publish
from benchmarks.worktree import RevisionError, checkout, commit

TARGET_ACCURACY = 0.93  # the default recipe's, as the README quotes it
TUNE_SPEEDUP = 1.5  # make tune against an older revision's, for as many trials
# One trial, and its confirmation on the fewest seeds an interval allows.
TUNE_SMOKE = ["--n-trials", "1", "--epochs", "1", "--train-subset", "512", "--seeds", "2"]
TUNE_SMOKE += ["--warmup-epochs", "0"]
TUNE_SMOKE += SMOKE_CONFIG


def make(
    repo: Path, target: str, args: Sequence[str], tmp: Path, python: str | None
) -> dict[str, Any]:
    """`make -C repo target ARGS=...` in a fresh store under tmp: wall time and output lines."""
    tmp.mkdir(parents=True)
    prepare_store(tmp)
    cmd = ["make", "-C", str(repo), target, "ARGS=" + shlex.join(args)]
    # Another interpreter than the checkout's venv: the venv step is left out, not rebuilt.
    cmd += [f"PY={python}", "VENV_STAMP="] if python else []
    run = run_process(cmd, script_env(tmp)).check()
    # The last lines are what the user saw at the end: the result, or what went wrong.
    return {"wall_s": run.wall_s, "last_lines": [line for _, line in run.lines[-40:]], "run": run}


def train_once(repo: Path, tmp: Path, smoke: bool, python: str | None) -> dict[str, Any]:
    out = make(repo, "train", TRAIN_SMOKE if smoke else [], tmp, python)
    acc = out.pop("run").last(r"^test_accuracy: (\S+)")
    if acc is None:
        raise RuntimeError("make train printed no test_accuracy:\n" + "\n".join(out["last_lines"]))
    return {**out, "test_accuracy": float(acc[1][1])}


def tune_once(repo: Path, tmp: Path, smoke: bool, python: str | None) -> dict[str, Any]:
    args = ["--storage", f"sqlite:///{tmp}/optuna.db", "--output-dir", str(tmp / "studies")]
    out = make(repo, "tune", args + (TUNE_SMOKE if smoke else []), tmp, python)
    counts = tune_summary(out.pop("run"))
    return {**out, **counts}


def main(argv: list[str] | None = None) -> int:
    p = parser("bench_make", __doc__.split("\n\n")[0], repeats=1)
    p.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose Makefile runs")
    p.add_argument(
        "--python",
        default=None,
        help="run make with PY=PYTHON and without its venv step, for a checkout whose venv lives "
        "elsewhere (default: the checkout's .venv, which must exist: setup is not timed)",
    )
    p.add_argument(
        "--against",
        metavar="REV",
        default=None,
        help="also run both targets at git revision REV (hash, tag, branch, HEAD~3), from a "
        "temporary worktree with this checkout's interpreter, and compare (default: this only)",
    )
    args = parse(p, argv)
    if args.device != "cpu":
        p.error("--device: make train and make tune pick their device themselves; leave it out")
    if args.python is None and not (args.repo / ".venv" / "bin" / "python").exists():
        p.error(f"{args.repo} has no .venv: run `make setup` there first, or pass --python PYTHON")
    try:
        with contextlib.ExitStack() as stack:
            repos = {"here": args.repo}
            if args.against is not None:
                full = commit(args.against)
                repos[args.against] = stack.enter_context(checkout(full))
                args.python = args.python or str(args.repo / ".venv" / "bin" / "python")
            return measure(args, repos)
    except RevisionError as e:
        print(f"error: --against {args.against}: {e}", file=sys.stderr)
        return 2


def measure(args: argparse.Namespace, repos: dict[str, Path]) -> int:
    """Both targets in each repo, alternating, then the rows: this checkout's, and where repos
    holds another revision, its times and results beside ours."""
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-make-"))
    trains: dict[str, list] = {name: [] for name in repos}
    tunes: dict[str, list] = {name: [] for name in repos}
    for rep in range(args.repeats):
        for i, (name, repo) in enumerate(repos.items()):
            trains[name].append(train_once(repo, tmp / f"train-{rep}-{i}", args.smoke, args.python))
        for i, (name, repo) in enumerate(repos.items()):
            tunes[name].append(tune_once(repo, tmp / f"tune-{rep}-{i}", args.smoke, args.python))
    s = {name: summaries(trains[name], tunes[name]) for name in repos}
    med = {name: {k: v["median"] for k, v in s[name].items()} for name in repos}
    here = med["here"]
    rows = [
        Row("make train: wall time, start to exit", here["train_wall_s"], None, "s", None),
        Row(
            "make train: test accuracy",
            100 * here["train_test_accuracy"],
            None,
            "%",
            None,
            f"≥ {TARGET_ACCURACY:.0%}",
            here["train_test_accuracy"] >= TARGET_ACCURACY,
        ),
        Row("make tune: wall time, start to exit", here["tune_wall_s"], None, "s", None),
        Row("make tune: trials counted", here["tune_trials"], None, "trials", None),
        Row("make tune: best val accuracy", 100 * here["tune_best_val_accuracy"], None, "%", None),
    ]
    overrides = f" with ARGS {shlex.join(TRAIN_SMOKE)} and {shlex.join(TUNE_SMOKE)}"
    notes = [
        f"`make train` then `make tune` in {args.repo}{overrides if args.smoke else ''}, each "
        f"with its own MLflow store and Optuna storage; median of {args.repeats} run(s) each.",
    ]
    for name in repos:
        counts = "; ".join(
            f"{r['complete']} complete, {r['pruned']} pruned, {r['failed']} failed"
            for r in tunes[name]
        )
        notes.append(f"Trials{'' if name == 'here' else f' at {name}'}: {counts}")
    details: dict[str, Any] = {
        **s["here"],
        "train_runs": trains["here"],
        "tune_runs": tunes["here"],
    }
    title = "The README's entry points: make train and make tune"
    # This checkout's own rows stand as its plain measurement, with or without --against.
    publish(args, "make", title, rows, dict(details), notes[:2])
    if args.against is not None:
        rev = args.against
        rows = rows + rows_against(rev, here, med[rev])
        details["against"] = {
            "revision": rev,
            **s[rev],
            "train_runs": trains[rev],
            "tune_runs": tunes[rev],
        }
        notes.append(
            f"Against {rev}: its targets ran in a temporary git worktree of it "
            f"({repos[rev].name}), with {args.python}, alternating with this checkout's."
        )
        publish(args, "make_against", f"{title}, here vs at {rev}", rows, details, notes)
    return 0


def summaries(trains: list[dict], tunes: list[dict]) -> dict[str, dict[str, Any]]:
    return {
        f"{name}_{key}": summary([r[key] for r in runs])
        for name, runs, keys in (
            ("train", trains, ("wall_s", "test_accuracy")),
            ("tune", tunes, ("wall_s", "trials", "best_val_accuracy")),
        )
        for key in keys
    }


def rows_against(rev: str, here: dict[str, float], there: dict[str, float]) -> list[Row]:
    """Each measure here beside REV's: times as REV's over ours (> 1: ours is faster)."""
    tune_ratio = ratio(there["tune_wall_s"], here["tune_wall_s"])
    return [
        Row(
            f"make train: wall time here vs at {rev}",
            here["train_wall_s"],
            there["train_wall_s"],
            "s",
            ratio(there["train_wall_s"], here["train_wall_s"]),
        ),
        Row(
            f"make train: test accuracy here vs at {rev}",
            100 * here["train_test_accuracy"],
            100 * there["train_test_accuracy"],
            "%",
            None,
        ),
        Row(
            f"make tune: wall time here vs at {rev}, {here['tune_trials']:g} trials vs "
            f"{there['tune_trials']:g}",
            here["tune_wall_s"],
            there["tune_wall_s"],
            "s",
            tune_ratio,
            f"≥ {TUNE_SPEEDUP:g}×",
            (tune_ratio or 0) >= TUNE_SPEEDUP,
        ),
        Row(
            f"make tune: best val accuracy here vs at {rev}",
            100 * here["tune_best_val_accuracy"],
            100 * there["tune_best_val_accuracy"],
            "%",
            None,
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
