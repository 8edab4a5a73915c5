"""An Optuna study: trials per hour and best val accuracy of a small study, two ways.

`--compare pruner` (CPU): the same study with `--pruner median` and with `--pruner none`: same
sampler and seed, same trial budget. `--compare workers` (the GPU check): the study with each
worker count of `--workers` (default 2,1) sharing the device, without pruning so all do the same
work; on CUDA the GPU's utilization and memory are sampled while each study runs. Each study is
`tune.py` as a child process with its own throwaway Optuna storage and a shared throwaway MLflow
store, timed from just before spawn to exit; the trial counts and best value are read from its
summary lines. The last variant is the baseline of every ratio.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.measure import ratio, summary
from benchmarks.process import (
    SMOKE_CONFIG,
    prepare_store,
    python,
    run_process,
    script_env,
    tune_summary,
)
from benchmarks.publish import Row, parse, parser, publish, result_name

# Trials short enough that a CPU study fits in minutes; --epochs and --train-subset override.
FULL = {"n_trials": 12, "epochs": 3, "train_subset": 10000}
SMOKE = {"n_trials": 1, "epochs": 1, "train_subset": 256}


def variants(compare: str, device: str, workers: list[int]) -> dict[str, list[str]]:
    """Name -> the tune.py flags that make the difference; the last is the baseline."""
    if compare == "pruner":
        return {"median": ["--pruner", "median"], "none": ["--pruner", "none"]}
    pin = ["--gpus", "0"] if device == "cuda" else []
    return {
        f"{n}_worker{'s' if n > 1 else ''}": ["--pruner", "none", "--workers", str(n), *pin]
        for n in workers
    }


@contextlib.contextmanager
def gpu_usage(device: str, interval_s: float = 0.5) -> Iterator[dict[str, Any]]:
    """Sample GPU 0's utilization (%) and memory in use (GiB) until the block ends."""
    usage: dict[str, Any] = {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_gib": None}
    if device != "cuda":
        yield usage
        return
    import pynvml  # nvidia-ml-py, installed wherever the NVIDIA driver is

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    util: list[int] = []
    mem: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            util.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            mem.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield usage
    finally:
        stop.set()
        thread.join()
        pynvml.nvmlShutdown()
        if util:
            usage.update(
                gpu_util_mean=statistics.mean(util),
                gpu_util_max=max(util),
                gpu_mem_max_gib=max(mem) / 2**30,
            )


def run_study(
    name: str, flags: list[str], common_flags: list[str], tmp: Path, rep: int, device: str
) -> dict[str, Any]:
    study = f"bench-{name}-{rep}"
    cmd = python(
        "tune.py",
        *common_flags,
        *flags,
        "--study-name",
        study,
        "--storage",
        f"sqlite:///{tmp}/optuna-{study}.db",
        "--output-dir",
        str(tmp / study),
    )
    with gpu_usage(device) as usage:
        run = run_process(cmd, script_env(tmp)).check()
    counts = tune_summary(run)
    return {
        "wall_s": run.wall_s,
        **counts,
        "trials_per_hour": counts["trials"] / run.wall_s * 3600,
        **usage,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("bench_study", __doc__.split("\n\n")[0], repeats=1)
    p.add_argument("--compare", choices=("pruner", "workers"), default="pruner")
    p.add_argument(
        "--workers",
        default="2,1",
        type=lambda t: [int(n) for n in t.split(",")],
        help="--compare workers: the worker counts to run, the last one the baseline",
    )
    p.add_argument("--n-trials", type=int, default=None, help=f"default {FULL['n_trials']}")
    p.add_argument("--epochs", type=int, default=None, help=f"per trial; default {FULL['epochs']}")
    p.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help=f"training images per trial; default {FULL['train_subset']}, 0 = all",
    )
    p.add_argument("--config", default=None, help="tune.py base config (default: the defaults)")
    p.add_argument("--space", default="experiments/spaces/default.yaml")
    p.add_argument("--sampler", default="tpe")
    p.add_argument("--seed", type=int, default=0, help="sampler seed, the same for both studies")
    args = parse(p, argv)
    sizes = SMOKE if args.smoke else FULL
    n_trials = args.n_trials or sizes["n_trials"]
    epochs = args.epochs or sizes["epochs"]
    subset = sizes["train_subset"] if args.train_subset is None else args.train_subset
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-study-"))
    prepare_store(tmp)
    common_flags = [
        "--n-trials",
        str(n_trials),
        "--epochs",
        str(epochs),
        "--train-subset",
        str(subset),
        "--warmup-epochs",
        "0",
        "--space",
        args.space,
        "--sampler",
        args.sampler,
        "--seed",
        str(args.seed),
        "--device",
        args.device,
        # Trials per hour and the best trial measure the search; seed confirmation is extra.
        "--confirm-top",
        "0",
    ]
    common_flags += ["--config", args.config] if args.config else []
    common_flags += SMOKE_CONFIG if args.smoke else []
    flags = variants(args.compare, args.device, args.workers)
    # Studies alternate, as the variants of the other benchmarks do.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in flags}
    for rep in range(args.repeats):
        for name, f in flags.items():
            runs[name].append(run_study(name, f, common_flags, tmp, rep, args.device))
    keys = ("wall_s", "trials_per_hour", "best_val_accuracy", "pruned", "gpu_util_mean")
    med = {
        name: {
            k: None if None in (vals := [r[k] for r in rs]) else summary(vals)["median"]
            for k in keys
        }
        for name, rs in runs.items()
    }
    *others, base = list(flags)
    acc = {k: 100 * v["best_val_accuracy"] for k, v in med.items() if v["best_val_accuracy"]}
    tph = {k: v["trials_per_hour"] for k, v in med.items()}
    wall = {k: v["wall_s"] for k, v in med.items()}
    util = {k: v["gpu_util_mean"] for k, v in med.items()}
    rows = []
    for ours in others:
        rows += [
            Row(
                f"trials per hour, {ours} vs {base}",
                tph[ours],
                tph[base],
                "trials/h",
                ratio(tph[ours], tph[base]),
                "report the ratio",
            ),
            Row(
                f"study wall time, {ours} vs {base}",
                wall[ours],
                wall[base],
                "s",
                ratio(wall[base], wall[ours]),
            ),
            Row(
                f"best val accuracy, {ours} vs {base}",
                acc.get(ours),
                acc.get(base),
                "%",
                ratio(acc.get(ours), acc.get(base)),
            ),
        ]
        if util[ours] is not None:
            rows.append(
                Row(
                    f"mean GPU utilization, {ours} vs {base}",
                    util[ours],
                    util[base],
                    "%",
                    ratio(util[ours], util[base]),
                )
            )
    notes = [
        f"{n_trials} trials per study, each {epochs} epoch(s) on "
        f"{subset or 'all'} training images, space {args.space}, sampler {args.sampler} seed "
        f"{args.seed}; median of {args.repeats} study per variant. Trials pruned: "
        + ", ".join(f"{k} {v['pruned']:g}" for k, v in med.items())
        + f". Ratios: > 1 favours the named variant over {base}.",
    ]
    publish(
        args,
        result_name("study", args.device, "" if args.compare == "pruner" else "workers"),
        f"An Optuna study, {' vs '.join(flags)}, {args.device}",
        rows,
        {"flags": flags, "common_flags": common_flags, "runs": runs},
        notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
