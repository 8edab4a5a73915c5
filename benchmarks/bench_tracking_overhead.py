"""MLflow tracking overhead: wall time of the same training run with MLflow logging and without.

In one process, alternating: `train(cfg, [MlflowCallback(cfg, log_model=False)])` against
`train(cfg, [])`, each timed around the whole call (the callback's construction and its
end-of-run plots included), after a discarded warmup round that pays the one-off imports and the
store's creation. The run is the speedrun recipe, the shortest real run, where a per-run cost
weighs most, and as long as a study trial. Within each logged run, the seconds spent inside the
callback's hooks are added up: that is the headline, since the A/B difference of two runs this
short swings by several percent with the machine, and the hooks' own time does not.

Uploading the model is a one-off cost at the end of a run, so it is its own
variant (`log_model=True`) and its own row, not part of the overhead. So is importing mlflow,
which train.py pays once per process: timed in fresh interpreters.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import ROOT
from benchmarks.measure import rounds, summary
from benchmarks.process import prepare_store, run_process, script_env
from benchmarks.publish import Row, parse, parser, publish, result_name
from experiments.callbacks import Callback
from experiments.config import Config, load_config
from experiments.engine import train

TARGET_PCT = 2.0
RECIPE = ROOT / "experiments" / "configs" / "speedrun.yaml"
# The smoke run only has to pass through every path; tutorial_cnn evaluates 10k test images fastest.
SMOKE_RUN = {
    "model": "tutorial_cnn",
    "epochs": 1,
    "train_subset": 512,
    "val_size": 500,
    "warmup_epochs": 0,
}


class HookTimer:
    """Forwards every hook to the wrapped callback and adds up the seconds spent inside them."""

    def __init__(self, inner: Callback, spent: list[float]) -> None:
        self.inner, self.spent = inner, spent

    def __getattr__(self, name: str) -> Callable[..., object]:
        hook = getattr(self.inner, name)

        def timed_hook(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.spent[-1] += time.perf_counter() - t0

        return timed_hook


def timed(cfg: Config, callbacks: Callable[[], list[Callback]]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        train(cfg, callbacks())
        return time.perf_counter() - t0

    return run


def import_time(module: str) -> Callable[[], float]:
    """Seconds for a fresh interpreter to import `module` and exit."""
    return lambda: run_process([sys.executable, "-c", f"import {module}"]).check().wall_s


def main(argv: list[str] | None = None) -> int:
    args = parse(parser("bench_tracking_overhead", __doc__.split("\n\n")[0], repeats=3), argv)
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-tracking-"))
    prepare_store(tmp)
    # The callbacks find their store through MLFLOW_TRACKING_URI, so the whole process uses the
    # throwaway one.
    os.environ.update(script_env(tmp))
    from experiments.tracking import MlflowCallback

    overrides = {"device": args.device, "run_name": "bench-tracking"}
    if args.smoke:
        cfg = load_config(None, {**SMOKE_RUN, **overrides})
    else:
        cfg = load_config(RECIPE, overrides)
    hook_s: dict[bool, list[float]] = {False: [], True: []}  # by log_model

    def timed_mlflow(log_model: bool) -> Callable[[], list[Callback]]:
        def callbacks() -> list[Callback]:
            hook_s[log_model].append(0.0)
            return [HookTimer(MlflowCallback(cfg, log_model=log_model), hook_s[log_model])]

        return callbacks

    runs = rounds(
        {
            "no_callbacks": timed(cfg, lambda: []),
            "mlflow": timed(cfg, timed_mlflow(False)),
            "mlflow_log_model": timed(cfg, timed_mlflow(True)),
        },
        args.repeats,
        args.warmup,
    )
    imports = rounds(
        {
            "train": import_time("train"),
            "train_and_mlflow": import_time("train, experiments.tracking"),
        },
        args.repeats,
        args.warmup,
    )
    kept_hooks = hook_s[False][-args.repeats :]
    in_run = [100 * h / (w - h) for h, w in zip(kept_hooks, runs["mlflow"], strict=True)]
    s = {
        k: summary(v)
        for k, v in {
            **runs,
            **{f"import_{k}": v for k, v in imports.items()},
            "hook_s": kept_hooks,
            "hook_with_upload_s": hook_s[True][-args.repeats :],
            "hook_pct": in_run,
        }.items()
    }
    med = {k: v["median"] for k, v in s.items()}
    overhead = 100 * (med["mlflow"] - med["no_callbacks"]) / med["no_callbacks"]
    rows = [
        Row(
            "tracking overhead: time inside the MLflow hooks, % of the rest of the run",
            med["hook_pct"],
            None,
            "%",
            None,
            f"≤ {TARGET_PCT:g}%",
            med["hook_pct"] <= TARGET_PCT,
        ),
        Row(
            f"cross-check, A/B: run wall time, MLflow (no upload) vs none ({overhead:+.1f}%)",
            med["mlflow"],
            med["no_callbacks"],
            "s",
            med["no_callbacks"] / med["mlflow"],
        ),
        Row(
            "one-off: model upload at the end (log_model), inside the hooks",
            med["hook_with_upload_s"] - med["hook_s"],
            None,
            "s",
            None,
        ),
        Row(
            "one-off: importing mlflow, per process",
            med["import_train_and_mlflow"] - med["import_train"],
            None,
            "s",
            None,
        ),
    ]
    run_desc = (
        ", ".join(f"{k} {v}" for k, v in SMOKE_RUN.items())
        if args.smoke
        else f"`{RECIPE.relative_to(ROOT)}` ({cfg.epochs} epochs of the full split)"
    )
    notes = [
        f"The run: {run_desc}, other settings default; checkpoints on, as in train.py. Median "
        f"of {args.repeats} run(s) per variant after {args.warmup} warmup round(s), alternating.",
        "A short run overstates the overhead: most of what the callback costs is per run (run "
        "creation, params, plots), not per epoch.",
        f"Hooks: {med['hook_s']:.2f} s per run (median) inside on_start, on_epoch_end, "
        "on_checkpoint and on_end, timed in the same runs as the wall times.",
    ]
    publish(
        args,
        result_name("tracking_overhead", args.device),
        "MLflow tracking overhead",
        rows,
        s,
        notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
