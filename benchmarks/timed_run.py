"""One training run as train.py runs it, with or without its MLflow tracking, timed part by part.

    python -m benchmarks.timed_run [--tracking] [--config YAML] [--seed K] [--smoke]

The child process of bench_tracking_overhead: a fresh process per run, so the tracked run pays
what train.py pays in each process (importing the tracking code, the first model upload's
one-off costs). It prints one line, `timed_run: {json}`: the seconds of `train()` and, tracked,
of each part of what tracking adds (figures.PARTS) and of each hook the engine called.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments.config import load_config
from experiments.engine import dataset, train

PREFIX = "timed_run: "
# The smoke run only has to pass through every path: an mlp scores the 10k test images at once.
SMOKE_RUN = {"model": "mlp", "width": 16, "epochs": 1, "train_subset": 512, "val_size": 500}
# The hooks of a run's start and of its end (plots, model upload, final metrics, status); every
# other hook the engine calls counts as per epoch.
START, END = ("on_start", "on_data", "on_resume"), ("on_end", "on_error")


class HookTimer:
    """Forwards every attribute of the callback it wraps, timing each method call into
    spent[name], so a hook added to the engine later is timed too. No Callback subclass: the
    base class's no-op hooks would shadow the forwarding."""

    def __init__(self, inner: object, spent: dict[str, float]) -> None:
        self.inner, self.spent = inner, spent

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        return self.timed(attr, name) if callable(attr) else attr

    def timed(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t0

        return call


def run(config: str | None, seed: int, tracking: bool, smoke: bool) -> dict[str, Any]:
    cfg = load_config(config, {**(SMOKE_RUN if smoke else {}), "seed": seed})
    dataset(cfg.data_dir)
    if not tracking:
        t0 = time.perf_counter()
        train(cfg, [])
        return {"train_s": time.perf_counter() - t0, "epochs": cfg.epochs}
    # train.py imports the tracking code in main(), after everything else: the same here.
    t0 = time.perf_counter()
    from experiments.tracking import MlflowCallback

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    callback = MlflowCallback(cfg)
    construct_s = time.perf_counter() - t0
    hooks: dict[str, float] = {}
    t0 = time.perf_counter()
    train(cfg, [HookTimer(callback, hooks)])
    train_s = time.perf_counter() - t0
    start_s = construct_s + sum(v for k, v in hooks.items() if k in START)
    end_s = sum(v for k, v in hooks.items() if k in END)
    return {
        "train_s": train_s,
        "process_s": import_s + construct_s + train_s,
        "import_s": import_s,
        "start_s": start_s,
        "per_epoch_s": sum(hooks.values()) + construct_s - start_s - end_s,
        "end_s": end_s,
        "hooks_s": hooks,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.timed_run")
    p.add_argument("--tracking", action="store_true", help="with train.py's MlflowCallback")
    p.add_argument("--config", default=None, help="train.py experiment file (default: defaults)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="1 epoch of an mlp on 512 images")
    args = p.parse_args(argv)
    print(PREFIX + json.dumps(run(args.config, args.seed, args.tracking, args.smoke)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
