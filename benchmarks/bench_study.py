"""Row 7: a small Optuna study, trials per hour and best val accuracy, two ways.

`--compare pruner` (row 7, CPU): the same study with `--pruner median` and with `--pruner none`:
same sampler and seed, same trial budget. `--compare workers` (the GPU check): one worker vs two
sharing the device, without pruning so both do the same work. Each study is `tune.py` as a child
process with its own throwaway Optuna storage and a shared throwaway MLflow store, timed from
just before spawn to exit; the trial counts and best value are read from its summary lines.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import common

COUNTS = r"^trials: (\d+) counted \(budget \d+\): (\d+) complete, (\d+) pruned, (\d+) failed"
BEST = r"^best_val_accuracy: (\S+)"
# Trials short enough that a CPU study fits in minutes; --epochs and --train-subset override.
FULL = {"n_trials": 12, "epochs": 3, "train_subset": 10000}
SMOKE = {"n_trials": 1, "epochs": 1, "train_subset": 256}


def variants(compare: str, device: str) -> dict[str, list[str]]:
    """Name -> the tune.py flags that make the difference; the first is 'ours'."""
    if compare == "pruner":
        return {"median": ["--pruner", "median"], "none": ["--pruner", "none"]}
    pin = ["--gpus", "0"] if device == "cuda" else []
    return {
        "2_workers": ["--pruner", "none", "--workers", "2", *pin],
        "1_worker": ["--pruner", "none", "--workers", "1", *pin],
    }


def run_study(
    name: str, flags: list[str], common_flags: list[str], tmp: Path, rep: int
) -> dict[str, Any]:
    study = f"bench-{name}-{rep}"
    cmd = common.python(
        "tune.py", *common_flags, *flags, "--study-name", study,
        "--storage", f"sqlite:///{tmp}/optuna-{study}.db", "--output-dir", str(tmp / study),
    )  # fmt: skip
    run = common.run_process(cmd, common.script_env(tmp)).check()
    counts, best = run.last(COUNTS), run.last(BEST)
    if counts is None:
        raise RuntimeError(f"tune.py printed no trial counts:\n{run.output[-2000:]}")
    counted, complete, pruned, failed = (int(counts[1][i]) for i in range(1, 5))
    return {
        "wall_s": run.wall_s,
        "trials": counted,
        "complete": complete,
        "pruned": pruned,
        "failed": failed,
        "trials_per_hour": counted / run.wall_s * 3600,
        "best_val_accuracy": float(best[1][1]) if best else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser("bench_study", __doc__.split("\n\n")[0], repeats=1)
    p.add_argument("--compare", choices=("pruner", "workers"), default="pruner")
    p.add_argument("--n-trials", type=int, default=None, help=f"default {FULL['n_trials']}")
    p.add_argument("--epochs", type=int, default=None, help=f"per trial; default {FULL['epochs']}")
    p.add_argument(
        "--train-subset", type=int, default=None,
        help=f"training images per trial; default {FULL['train_subset']}, 0 = all",
    )  # fmt: skip
    p.add_argument("--config", default=None, help="tune.py base config (default: the defaults)")
    p.add_argument("--space", default="experiments/spaces/default.yaml")
    p.add_argument("--sampler", default="tpe")
    p.add_argument("--seed", type=int, default=0, help="sampler seed, the same for both studies")
    args = common.parse(p, argv)
    sizes = SMOKE if args.smoke else FULL
    n_trials = args.n_trials or sizes["n_trials"]
    epochs = args.epochs or sizes["epochs"]
    subset = sizes["train_subset"] if args.train_subset is None else args.train_subset
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-study-"))
    common.prepare_store(tmp)
    common_flags = [
        "--n-trials", str(n_trials), "--epochs", str(epochs), "--train-subset", str(subset),
        "--warmup-epochs", "0", "--space", args.space, "--sampler", args.sampler,
        "--seed", str(args.seed), "--device", args.device,
    ]  # fmt: skip
    common_flags += ["--config", args.config] if args.config else []
    common_flags += common.SMOKE_CONFIG if args.smoke else []
    flags = variants(args.compare, args.device)
    # Studies alternate, as the variants of the other benchmarks do.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in flags}
    for rep in range(args.repeats):
        for name, f in flags.items():
            runs[name].append(run_study(name, f, common_flags, tmp, rep))
    med = {
        name: {k: common.summary([r[k] for r in rs])["median"]
               for k in ("wall_s", "trials_per_hour", "best_val_accuracy", "pruned")}
        for name, rs in runs.items()
    }  # fmt: skip
    ours, base = list(flags)
    acc = {k: 100 * v["best_val_accuracy"] for k, v in med.items() if v["best_val_accuracy"]}
    tph = {k: v["trials_per_hour"] for k, v in med.items()}
    wall = {k: v["wall_s"] for k, v in med.items()}
    rows = [
        common.Row(f"trials per hour, {ours} vs {base}", tph[ours], tph[base], "trials/h",
                   common.ratio(tph[ours], tph[base]), "report the ratio"),
        common.Row(f"study wall time, {ours} vs {base}", wall[ours], wall[base], "s",
                   common.ratio(wall[base], wall[ours])),
        common.Row(f"best val accuracy, {ours} vs {base}", acc.get(ours), acc.get(base), "%",
                   common.ratio(acc.get(ours), acc.get(base))),
    ]  # fmt: skip
    notes = [
        f"{n_trials} trials per study, each {epochs} epoch(s) on "
        f"{subset or 'all'} training images, space {args.space}, sampler {args.sampler} seed "
        f"{args.seed}; median of {args.repeats} study per variant. Trials pruned: "
        + ", ".join(f"{k} {v['pruned']:g}" for k, v in med.items())
        + ". Ratios: > 1 favours the first variant.",
    ]
    common.publish(
        args,
        common.result_name("study", args.device, "" if args.compare == "pruner" else "workers"),
        f"Row 7: an Optuna study, {ours} vs {base}, {args.device}", rows,
        {"flags": flags, "common_flags": common_flags, "runs": runs}, notes,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
