"""MLflow tracking overhead: the whole cost of tracking a default run, as train.py tracks it.

Each run is a fresh child process (`python -m benchmarks.timed_run`), alternating: the default
run (train.py without flags, what `make train` runs) with train.py's `MlflowCallback`, model
upload included, and the same run with no callback. The headline is everything tracking adds,
timed inside the tracked process: importing the tracking code, building the callback, and every
hook the engine calls on it (run start, per-epoch metrics and checkpoints, the end-of-run plots,
the model upload, the final status), as a % of the untracked run's `train()`. Its parts are rows
of their own. The A/B difference of the two runs' wall times is a cross-check: runs minutes long
swing by more than the overhead with the machine, the timed parts do not.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.measure import ratio, rounds, summary
from benchmarks.process import module, prepare_store, run_process, script_env
from benchmarks.publish import Row, parse, parser, publish, result_name
from benchmarks.timed_run import PREFIX, SMOKE_RUN

TARGET_PCT = 1.0
# Hooks called once per run; every other hook the engine calls counts as per epoch.
RUN_HOOKS = ("on_start", "on_resume", "on_end", "on_error")


def child(
    config: str | None, device: str, tracking: bool, smoke: bool, tmp: Path
) -> dict[str, Any]:
    args = ["--device", device, *["--tracking"] * tracking, *["--smoke"] * smoke]
    args += ["--config", config] if config else []
    run = run_process(module("benchmarks.timed_run", *args), script_env(tmp)).check()
    line = run.last("^" + PREFIX + "(.*)$")
    if line is None:
        raise RuntimeError(f"timed_run printed no result:\n{run.output[-2000:]}")
    return json.loads(line[1][1])


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


def main(argv: list[str] | None = None) -> int:
    p = parser("bench_tracking_overhead", __doc__.split("\n\n")[0], repeats=2)
    p.add_argument(
        "--config", default=None, help="train.py experiment file (default: the default run)"
    )
    args = parse(p, argv)
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-tracking-"))
    prepare_store(tmp)
    # A tiny run of each first reads every file both need from disk once; the measured runs
    # then start alike. Each run is its own process, so nothing else carries over.
    for tracking in (False, True) * bool(args.warmup):
        child(args.config, args.device, tracking, True, tmp)
    tracked_runs: list[dict[str, Any]] = []

    def tracked() -> float:
        tracked_runs.append(child(args.config, args.device, True, args.smoke, tmp))
        return tracked_runs[-1]["train_s"]

    walls = rounds(
        {
            "untracked": lambda: child(args.config, args.device, False, args.smoke, tmp)["train_s"],
            "tracked": tracked,
        },
        args.repeats,
        warmup=0,
    )
    split = [parts(r) for r in tracked_runs]
    s = {
        **{f"{k}_train_s": summary(v) for k, v in walls.items()},
        **{f"{k}_s": summary([p[k] for p in split]) for k in split[0]},
        "tracked_process_s": summary(
            [r["import_s"] + r["construct_s"] + r["train_s"] for r in tracked_runs]
        ),
    }
    med = {k: v["median"] for k, v in s.items()}
    base = med["untracked_train_s"]
    pct = {k: 100 * med[f"{k}_s"] / base for k in split[0]}
    rows = [
        Row(
            "tracking a run as train.py does (all parts below), % of the untracked run",
            pct["total"],
            None,
            "%",
            None,
            f"≤ {TARGET_PCT:g}%",
            pct["total"] <= TARGET_PCT,
        ),
        Row(
            "part: per-epoch hooks (metrics, checkpoints)",
            med["per_epoch_hooks_s"],
            None,
            "s",
            None,
        ),
        Row("part: end-of-run plots", med["plots_s"], None, "s", None),
        Row("part: model upload", med["model_upload_s"], None, "s", None),
        Row(
            "part: run start and end (run, params, final metrics, status)",
            med["start_end_s"],
            None,
            "s",
            None,
        ),
        Row(
            "part: importing the tracking code (mlflow), per process",
            med["import_s"],
            None,
            "s",
            None,
        ),
        Row(
            "cross-check, A/B: tracked process from its tracking import vs untracked train() "
            f"({100 * (med['tracked_process_s'] - base) / base:+.1f}%)",
            med["tracked_process_s"],
            base,
            "s",
            ratio(base, med["tracked_process_s"]),
        ),
    ]
    hooks_seen = sorted({h for r in tracked_runs for h in r["hooks_s"]})
    run_desc = (
        ", ".join(f"{k} {v}" for k, v in SMOKE_RUN.items())
        if args.smoke
        else f"`train.py{' --config ' + args.config if args.config else ''}` "
        f"({tracked_runs[0]['epochs']} epochs)"
    )
    notes = [
        f"The run: {run_desc}, checkpoints on, each in a fresh process. Median of "
        f"{args.repeats} run(s) per variant, alternating, after a tiny run of each.",
        f"Untracked train(): {base:.1f} s. Parts as % of it: "
        + ", ".join(f"{k} {v:.2f}%" for k, v in pct.items() if k != "total")
        + ".",
        "Hooks timed: " + ", ".join(hooks_seen) + f"; per-run hooks: {', '.join(RUN_HOOKS)}.",
    ]
    publish(
        args,
        result_name("tracking_overhead", args.device),
        "MLflow tracking overhead of a default run",
        rows,
        {**s, "pct": pct, "runs": tracked_runs},
        notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
