"""MLflow tracking overhead: the whole cost of tracking a default run, as train.py tracks it.

Each run is a fresh child process (`python -m benchmarks.timed_run`), alternating: the default
run (train.py without flags, what `make train` runs) with train.py's `MlflowCallback`, model
upload included, and the same run with no callback. The headline is everything tracking adds,
timed inside the tracked process: importing the tracking code, building the callback, and every
hook the engine calls on it (run start, per-epoch metrics and checkpoints, the end-of-run plots,
the model upload, the final status), as a % of the untracked run's `train()`. Its parts are rows
of their own. The A/B difference of the two runs' wall times is a cross-check: runs minutes long
swing by more than the overhead with the machine, the timed parts do not.

`--against REV` measures another git revision's tracking in the same rounds: its runs start in a
temporary worktree of REV (removed afterwards) with this tree's `benchmarks/` copied in, so one
`timed_run` times both, the same config, a store set up alike; the four variants alternate, so
the machine's drift hits both revisions alike. Rows added: the overhead at REV vs here, as a
ratio, and each part's seconds at both. A REV that lacks something timed_run calls is named and
exits 2, as does a REV git does not know.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from benchmarks.machine import git_revision
from benchmarks.measure import ratio, rounds, summary
from benchmarks.process import module, prepare_store, run_process, script_env
from benchmarks.publish import Row, parse, parser, publish, result_name
from benchmarks.timed_run import LACKS, PREFIX, SMOKE_RUN
from benchmarks.worktree import RevisionError, checkout, commit

TARGET_PCT = 1.0
# Hooks called once per run; every other hook the engine calls counts as per epoch.
RUN_HOOKS = ("on_start", "on_data", "on_resume", "on_end", "on_error")
# The parts as the rows name them.
PART_NAMES = {
    "per_epoch_hooks": "per-epoch hooks (metrics, checkpoints)",
    "plots": "end-of-run plots",
    "model_upload": "model upload",
    "start_end": "run start and end (run, params, datasets, final metrics, status)",
    "import": "importing the tracking code (mlflow), per process",
}


def child(
    config: str | None,
    device: str,
    tracking: bool,
    smoke: bool,
    store: Path,
    tree: Path = ROOT,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One timed_run in a fresh process started in tree, recording into store."""
    args = ["--device", device, *["--tracking"] * tracking, *["--smoke"] * smoke]
    args += ["--config", config] if config else []
    cmd = module("benchmarks.timed_run", *args)
    run = run_process(cmd, script_env(store, **(env or {})), cwd=tree)
    if lacks := run.last("^" + LACKS + "(.*)$"):
        raise RevisionError(
            f"the code in {tree} lacks {lacks[1][1]}, which benchmarks/timed_run.py calls: "
            "measure a revision that has it"
        )
    line = run.check().last("^" + PREFIX + "(.*)$")
    if line is None:
        raise RuntimeError(f"timed_run printed no result:\n{run.output[-2000:]}")
    result = json.loads(line[1][1])
    if Path(result["code"]).resolve() != tree.resolve():
        raise RuntimeError(f"timed_run started in {tree} measured the code in {result['code']}")
    return result


def parts(run: dict[str, Any]) -> dict[str, float]:
    """The seconds of one tracked run, split into the parts the rows show."""
    hooks, inner = run["hooks_s"], run["parts_s"]
    run_hooks = sum(v for k, v in hooks.items() if k in RUN_HOOKS)
    return {
        "import": run["import_s"],
        "per_epoch_hooks": sum(v for k, v in hooks.items() if k not in RUN_HOOKS),
        "plots": inner.get("plots", 0.0),
        "model_upload": inner.get("model_upload", 0.0),
        "start_end": run["construct_s"] + run_hooks - sum(inner.values()),
        "total": run["import_s"] + run["construct_s"] + sum(hooks.values()),
    }


def variants(
    run: Callable[[bool, bool], dict[str, Any]], smoke: bool, tracked_runs: list[dict[str, Any]]
) -> dict[str, Callable[[], float]]:
    """The untracked and the tracked run of one revision, each returning its train() seconds;
    the tracked runs' whole timings go to tracked_runs."""

    def tracked() -> float:
        tracked_runs.append(run(True, smoke))
        return tracked_runs[-1]["train_s"]

    return {"untracked": lambda: run(False, smoke)["train_s"], "tracked": tracked}


def summarize(
    untracked: list[float], tracked: list[float], tracked_runs: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """One revision's summaries, their medians, and each part as % of its untracked train()."""
    split = [parts(r) for r in tracked_runs]
    s = {
        "untracked_train_s": summary(untracked),
        "tracked_train_s": summary(tracked),
        **{f"{k}_s": summary([p[k] for p in split]) for k in split[0]},
        "tracked_process_s": summary(
            [r["import_s"] + r["construct_s"] + r["train_s"] for r in tracked_runs]
        ),
    }
    med = {k: v["median"] for k, v in s.items()}
    pct = {k: 100 * med[f"{k}_s"] / med["untracked_train_s"] for k in split[0]}
    return s, med, pct


def rows_here(med: dict[str, float], pct: dict[str, float]) -> list[Row]:
    base = med["untracked_train_s"]
    return [
        Row(
            "tracking a run as train.py does (all parts below), % of the untracked run",
            pct["total"],
            None,
            "%",
            None,
            f"≤ {TARGET_PCT:g}%",
            pct["total"] <= TARGET_PCT,
        ),
        *(Row(f"part: {text}", med[f"{k}_s"], None, "s", None) for k, text in PART_NAMES.items()),
        Row(
            "cross-check, A/B: tracked process from its tracking import vs untracked train() "
            f"({100 * (med['tracked_process_s'] - base) / base:+.1f}%)",
            med["tracked_process_s"],
            base,
            "s",
            ratio(base, med["tracked_process_s"]),
        ),
    ]


def rows_against(
    rev: str,
    med: dict[str, float],
    pct: dict[str, float],
    old: dict[str, float],
    old_pct: dict[str, float],
) -> list[Row]:
    """Here in the ours column, REV in the baseline's; each ratio REV over here, so >= 1 means
    that here costs no more than REV."""
    return [
        Row(
            f"tracking overhead here vs at {rev}, % of each one's untracked run "
            f"(ratio {rev} / here: ≥ 1× means it did not grow)",
            pct["total"],
            old_pct["total"],
            "%",
            ratio(old_pct["total"], pct["total"]),
        ),
        Row(
            f"tracking's seconds here vs at {rev} (all parts; apart from how fast train() ran)",
            med["total_s"],
            old["total_s"],
            "s",
            ratio(old["total_s"], med["total_s"]),
        ),
        Row(
            f"untracked train() here vs at {rev} (what each % is of)",
            med["untracked_train_s"],
            old["untracked_train_s"],
            "s",
            ratio(old["untracked_train_s"], med["untracked_train_s"]),
        ),
        *(
            Row(
                f"part here vs at {rev}: {text}",
                med[f"{k}_s"],
                old[f"{k}_s"],
                "s",
                ratio(old[f"{k}_s"], med[f"{k}_s"]),
            )
            for k, text in PART_NAMES.items()
        ),
    ]


def as_pct(pct: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}%" for k, v in pct.items() if k != "total")


def per_run_pct(tracked_runs: list[dict[str, Any]], base_s: float) -> str:
    """Each tracked run's whole tracking, as % of base_s: the spread behind the median."""
    return ", ".join(f"{100 * parts(r)['total'] / base_s:.2f}%" for r in tracked_runs)


def main(argv: list[str] | None = None) -> int:
    p = parser("bench_tracking_overhead", __doc__.split("\n\n")[0], repeats=2)
    p.add_argument(
        "--config", default=None, help="train.py experiment file (default: the default run)"
    )
    p.add_argument(
        "--against",
        metavar="REV",
        default=None,
        help="also measure git revision REV (hash, tag, branch, HEAD~3) in the same rounds, from "
        "a temporary worktree with this tree's benchmarks/, and compare (default: this tree only)",
    )
    args = parse(p, argv)
    try:
        if args.against is None:
            return measure(args)
        against = commit(args.against)
        with checkout(against) as tree:
            return measure(args, (against, tree))
    except RevisionError as e:
        where = f"--against {args.against}: " if args.against else ""
        print(f"error: {where}{e}", file=sys.stderr)
        return 2


def timed_rounds(
    args: argparse.Namespace, trees: dict[str, Path], env: dict[str, str]
) -> tuple[dict[str, list[float]], dict[str, list[dict[str, Any]]]]:
    """The train() seconds of every variant, and the tracked runs' timings, per tree: trees maps
    a prefix of the variant names to the code its runs start in."""
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-tracking-"))
    # Every tree's runs read one config file; each its own store, made alike.
    config = args.config and str(Path(args.config).resolve())
    tracked_runs: dict[str, list[dict[str, Any]]] = {side: [] for side in trees}
    fns: dict[str, Callable[[], float]] = {}
    for side, code in trees.items():
        store = tmp / (side.rstrip("_") or "here")
        store.mkdir()
        prepare_store(store)
        run = functools.partial(child, config, args.device, store=store, tree=code, env=env)
        # A tiny run of each first reads every file both need from disk once; the measured runs
        # then start alike. Each run is its own process, so nothing else carries over.
        for tracking in (False, True) * bool(args.warmup):
            run(tracking, True)
        fns |= {side + k: fn for k, fn in variants(run, args.smoke, tracked_runs[side]).items()}
    return rounds(fns, args.repeats, warmup=0), tracked_runs


def measure(args: argparse.Namespace, against: tuple[str, Path] | None = None) -> int:
    """Run the rounds, publish the rows; against: REV's full hash and its worktree."""
    trees, env = {"": ROOT}, {}
    if against is not None:
        from data_utils import find_data_dir

        trees["against_"] = against[1]
        # The data a run finds depends on its working directory: both read this tree's.
        env["FASHION_MNIST_DIR"] = str(Path(find_data_dir()).resolve())
    walls, tracked_runs = timed_rounds(args, trees, env)
    s, med, pct = summarize(walls["untracked"], walls["tracked"], tracked_runs[""])
    rows = rows_here(med, pct)
    hooks_seen = sorted({h for r in tracked_runs[""] for h in r["hooks_s"]})
    run_desc = (
        ", ".join(f"{k} {v}" for k, v in SMOKE_RUN.items())
        if args.smoke
        else f"`train.py{' --config ' + args.config if args.config else ''}` "
        f"({tracked_runs[''][0]['epochs']} epochs)"
    )
    notes = [
        f"The run: {run_desc}, checkpoints on, each in a fresh process. Median of "
        f"{args.repeats} run(s) per variant, alternating, after a tiny run of each.",
        f"Untracked train(): {med['untracked_train_s']:.1f} s. Parts as % of it: {as_pct(pct)}.",
        "Hooks timed: " + ", ".join(hooks_seen) + f"; per-run hooks: {', '.join(RUN_HOOKS)}.",
    ]
    details: dict[str, Any] = {**s, "pct": pct, "runs": tracked_runs[""]}
    name = result_name("tracking_overhead", args.device)
    title = "MLflow tracking overhead of " + (
        f"`train.py --config {Path(args.config).name}` ({tracked_runs[''][0]['epochs']} epochs)"
        if args.config
        else "a default run"
    )
    if against is not None:
        rev, runs = args.against, tracked_runs["against_"]
        old_s, old, old_pct = summarize(walls["against_untracked"], walls["against_tracked"], runs)
        rows += rows_against(rev, med, pct, old, old_pct)
        notes += [
            f"Against {rev} ({against[0]}): its runs start in a temporary git worktree of it with "
            "this tree's benchmarks/ copied in, so the same timed_run times both, on the same "
            "config and data, each revision with a store set up alike; each round runs the "
            f"untracked and the tracked run here, then the same at {rev}.",
            f"At {rev}: untracked train() {old['untracked_train_s']:.1f} s. Parts as % of it: "
            f"{as_pct(old_pct)}.",
            "Tracking overhead of each tracked run, as % of its revision's median untracked "
            f"train(): here {per_run_pct(tracked_runs[''], med['untracked_train_s'])}; at {rev} "
            f"{per_run_pct(runs, old['untracked_train_s'])}.",
        ]
        details["against"] = {
            "revisions": {
                "here": git_revision(),
                "here_commit": commit("HEAD"),
                "against": rev,
                "against_commit": against[0],
            },
            **old_s,
            "pct": old_pct,
            "runs": runs,
        }
        name = result_name("tracking_overhead", args.device, "against")
        title += f", here vs at {rev}"
    publish(args, name, title, rows, details, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
