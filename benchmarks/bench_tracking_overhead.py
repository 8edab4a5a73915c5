"""MLflow tracking overhead: the whole cost of tracking a default run, as train.py tracks it.

Each run is a fresh child process (`python -m benchmarks.timed_run`), round K running the default
run (what `make train` runs) with seed K twice: with train.py's `MlflowCallback`, model upload
included, and with no callback. The headline is everything tracking adds, timed inside the
tracked process (importing the tracking code, building the callback, every hook the engine calls:
run start, per-epoch metrics and checkpoints, plots, the model upload, the end), as a % of the
untracked run's `train()`; its parts are figures of their own. The A/B difference of the two
processes is a cross-check: runs minutes long swing by more than the overhead with the machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from benchmarks.figures import PARTS
from benchmarks.process import prepare_store, run_process, script_env
from benchmarks.publish import parse, parser, publish, result_name
from benchmarks.timed_run import PREFIX


def timed(config: str | None, seed: int, tracking: bool, smoke: bool, store: Path) -> dict:
    args = ["--seed", str(seed), *["--tracking"] * tracking, *["--smoke"] * smoke]
    cmd = [sys.executable, "-m", "benchmarks.timed_run", *args]
    cmd += ["--config", config] if config else []
    run = run_process(cmd, script_env(store)).check()
    return json.loads(run.matches("^" + PREFIX + "(.*)$")[-1][1][1])


def main(argv: list[str] | None = None) -> int:
    p = parser("bench_tracking_overhead", __doc__.split("\n\n")[0], repeats=3)
    p.add_argument("--config", default=None, help="train.py experiment file (default: defaults)")
    args = parse(p, argv)
    store = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-tracking-"))
    prepare_store(store)
    # A tiny run of each first reads every file both need from disk once.
    for tracking in (False, True) * args.warmup:
        timed(args.config, 0, tracking, True, store)
    runs = [
        (
            timed(args.config, seed, False, args.smoke, store),
            timed(args.config, seed, True, args.smoke, store),
        )
        for seed in range(args.repeats)
    ]
    samples = {
        "config": args.config,
        "epochs": runs[0][0]["epochs"],
        "seed": list(range(args.repeats)),
        "untracked_s": [untracked["train_s"] for untracked, _ in runs],
        "tracked_s": [tracked["train_s"] for _, tracked in runs],
        **{key: [tracked[key] for _, tracked in runs] for key in ("process_s", "hooks_s", *PARTS)},
    }
    publish(args, result_name("tracking", args.device), "tracking", samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
