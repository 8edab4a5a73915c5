"""Row 5: wall time of the same training run with MLflow logging and without.

In one process, alternating: `train(cfg, [MlflowCallback(cfg, log_model=False)])` against
`train(cfg, [])`, each timed around the whole call (the callback's construction and its
end-of-run plots included), after a discarded warmup round that pays the one-off imports and the
store's creation. Uploading the model is a one-off cost at the end of a run, so it is its own
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

import common

from experiments.config import Config, load_config
from train import Callback, train

TARGET_PCT = 2.0
RUN = {"model": "cnn_bn", "epochs": 1, "train_subset": 20000}
# The smoke run only has to pass through every path; tutorial_cnn evaluates 10k test images fastest.
SMOKE_RUN = {"model": "tutorial_cnn", "epochs": 1, "train_subset": 512, "val_size": 500,
             "warmup_epochs": 0}  # fmt: skip


def timed(cfg: Config, callbacks: Callable[[], list[Callback]]) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        train(cfg, callbacks())
        return time.perf_counter() - t0

    return run


def import_time(module: str) -> Callable[[], float]:
    """Seconds for a fresh interpreter to import `module` and exit."""
    return lambda: common.run_process([sys.executable, "-c", f"import {module}"]).check().wall_s


def main(argv: list[str] | None = None) -> int:
    args = common.parse(
        common.parser("bench_tracking_overhead", __doc__.split("\n\n")[0], repeats=5), argv
    )
    tmp = Path(tempfile.mkdtemp(prefix="fashion-lab-bench-tracking-"))
    common.prepare_store(tmp)
    # The callbacks find their store through MLFLOW_TRACKING_URI, so the whole process uses the
    # throwaway one.
    os.environ.update(common.script_env(tmp))
    from experiments.tracking import MlflowCallback

    cfg = load_config(None, {**(SMOKE_RUN if args.smoke else RUN), "device": args.device,
                             "run_name": "bench-tracking"})  # fmt: skip
    runs = common.rounds(
        {
            "no_callbacks": timed(cfg, lambda: []),
            "mlflow": timed(cfg, lambda: [MlflowCallback(cfg, log_model=False)]),
            "mlflow_log_model": timed(cfg, lambda: [MlflowCallback(cfg, log_model=True)]),
        },
        args.repeats,
        args.warmup,
    )
    imports = common.rounds(
        {
            "train": import_time("train"),
            "train_and_mlflow": import_time("train, experiments.tracking"),
        },
        args.repeats,
        args.warmup,
    )
    s = {
        k: common.summary(v)
        for k, v in {**runs, **{f"import_{k}": v for k, v in imports.items()}}.items()
    }
    med = {k: v["median"] for k, v in s.items()}
    overhead = 100 * (med["mlflow"] - med["no_callbacks"]) / med["no_callbacks"]
    rows = [
        common.Row("tracking overhead, % of the run's wall time", overhead, None, "%", None,
                   f"≤ {TARGET_PCT:g}%", overhead <= TARGET_PCT),
        common.Row("run wall time, MLflow logging (no model upload) vs none", med["mlflow"],
                   med["no_callbacks"], "s", med["no_callbacks"] / med["mlflow"]),
        common.Row("one-off: model upload at the end (log_model)",
                   med["mlflow_log_model"] - med["mlflow"], None, "s", None),
        common.Row("one-off: importing mlflow, per process",
                   med["import_train_and_mlflow"] - med["import_train"], None, "s", None),
    ]  # fmt: skip
    run_desc = ", ".join(f"{k} {v}" for k, v in (SMOKE_RUN if args.smoke else RUN).items())
    notes = [
        f"The run: {run_desc}, other settings default; checkpoints on, as in train.py. Median "
        f"of {args.repeats} run(s) per variant after {args.warmup} warmup round(s), alternating.",
        "A short run overstates the overhead: most of what the callback costs is per run (run "
        "creation, params, plots), not per epoch.",
    ]
    common.publish(
        args, common.result_name("tracking_overhead", args.device),
        "Row 5: MLflow tracking overhead", rows, s, notes,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
