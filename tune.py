"""Run one Optuna study over the training engine, read as its lifecycle: flags, setup, launch
the workers, finish. One trial is one `train()` call and one MLflow child run.

The launching process checks every input, creates the study and its MLflow parent run, queues
--n-trials WAITING trials, then runs its workers. A worker claims queued trials one at a time
until none are left, so the study's total is exact however many workers, processes or machines
share it. Heartbeats mark a dead worker's trial FAIL; it is re-queued and resumes from the
checkpoint its MLflow run holds. The parts live in experiments/tuning/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data_utils import DataError
from experiments.cli import HelpFormatter, at_least, gpu_list, seconds
from experiments.config import ConfigError, add_config_flags
from experiments.engine import dataset
from experiments.stops import stop_cause, stop_exit_code, stop_on_sigterm
from experiments.tuning.launcher import launch_workers, visible_gpus
from experiments.tuning.report import finish_study
from experiments.tuning.storage import PRUNERS, SAMPLERS
from experiments.tuning.study import create_or_join, setup
from experiments.tuning.worker import Worker

EPILOG = """\
trial checkpoints:
  Every trial writes checkpoints/last.pt and best.pt to its MLflow run (--no-checkpoint turns
  them off), so a re-queued trial resumes instead of starting over. Once a trial is PRUNED, or
  COMPLETE but not the study's best, its checkpoints are deleted from the artifact store; a
  trial that stops being the best loses them then. FAIL trials keep theirs until the study has
  nothing left to run, since a re-queued retry resumes from them. --keep-checkpoints keeps all.

stops:
  Ctrl-C or SIGTERM fails the running trial and re-queues it at once (exit 130, 143); rerunning
  the command resumes it from its checkpoint. A trial is never pruned after its last epoch. One
  that runs out of GPU memory fails for good, and the worker goes on with the next.

many machines:
  Run the same command on every node with --storage postgresql://user:pw@host/db and
  MLFLOW_TRACKING_URI=http://host:port. The first launcher creates the study and its parent run;
  the others join them. A node that dies is noticed after --grace-period seconds and its trial
  is re-queued. Rerunning the command resumes the study; a larger --n-trials extends it.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tune.py",
        description="Run an Optuna study over the training engine. Each trial is an MLflow child\n"
        "run under one parent run per study (tracking URI: $MLFLOW_TRACKING_URI, else\n"
        "sqlite:///mlruns/mlflow.db). The objective is best val_accuracy, maximized.",
        epilog=EPILOG,
        formatter_class=lambda prog: HelpFormatter(prog, width=100),
    )
    add = parser.add_argument_group("study").add_argument
    add(
        "--config",
        metavar="YAML",
        default=None,
        help="base experiment file: the fixed settings every trial starts from "
        "(default: none, so Config's defaults)",
    )
    add(
        "--space",
        metavar="YAML",
        default="experiments/spaces/default.yaml",
        help="search space: config field -> {type: float|int|categorical, low, high, log, step, "
        "choices}",
    )
    add(
        "--study-name",
        metavar="NAME",
        default="fashion-lab",
        help="an existing study of this name is resumed, or joined from another machine",
    )
    add(
        "--storage",
        metavar="URL",
        default="sqlite:///mlruns/optuna.db",
        help="Optuna RDB storage; postgresql://... lets many machines share one study",
    )
    add(
        "--n-trials",
        metavar="N",
        type=at_least(1),
        default=20,
        help="total trials of the study, over all workers and machines; rerunning with a larger "
        "N extends the study",
    )
    add(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        default=None,
        help="start no new trial after this long; running ones finish (default: no limit)",
    )
    add(
        "--sampler",
        choices=SAMPLERS,
        default="tpe",
        help="tpe and gp learn from past trials (after a third of --n-trials, 3 to 10, drawn at "
        "random), random and qmc don't, nsgaii is genetic; seeded by --seed plus the trial number",
    )
    add(
        "--pruner",
        choices=PRUNERS,
        default="median",
        help="stops trials whose val_accuracy, reported every epoch, lags the others",
    )
    add(
        "--prune-from-epoch",
        metavar="EPOCH",
        type=at_least(1),
        default=1,
        help="first epoch at which a trial may be pruned (hyperband: its min resource)",
    )
    add(
        "--pruner-startup-trials",
        metavar="N",
        type=at_least(0),
        default=4,
        help="median pruner: trials that must complete before it prunes any",
    )
    add(
        "--top",
        metavar="N",
        type=at_least(1),
        default=10,
        help="rows in the final table of best trials",
    )
    add(
        "--output-dir",
        metavar="DIR",
        default=None,
        help="where best.yaml is written (default: mlruns/studies/NAME)",
    )
    add(
        "--retrain-best",
        action="store_true",
        help="then train the best config on all 60k training images and report its test "
        "accuracy (default: off; best.yaml shows the command)",
    )
    add(
        "--keep-checkpoints",
        action="store_true",
        help="keep every trial's checkpoints (default: off, see 'trial checkpoints' below)",
    )
    add(
        "--trial-test",
        action="store_true",
        help="score every trial on the test set too, with its plots (default: off; a trial is "
        "ranked on val accuracy alone, and --retrain-best tests the winner)",
    )

    add = parser.add_argument_group("workers").add_argument
    add(
        "--workers",
        metavar="N",
        type=at_least(1),
        default=None,
        help="worker processes on this machine (default: one per --gpus entry or visible GPU, "
        "else 1)",
    )
    add(
        "--gpus",
        type=gpu_list,
        metavar="IDS",
        default=None,
        help="comma-separated CUDA_VISIBLE_DEVICES ids; workers are pinned to them round-robin "
        "(default: every visible GPU)",
    )
    add(
        "--heartbeat-interval",
        type=at_least(1),
        metavar="SECONDS",
        default=10,
        help="how often a running trial tells the storage it is alive",
    )
    add(
        "--grace-period",
        type=at_least(2),
        metavar="SECONDS",
        default=60,
        help="a trial silent this long is failed and re-queued to resume from its checkpoint",
    )
    add("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    add_config_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    from experiments import tracking  # importing mlflow costs seconds; --help should not wait

    try:
        st = setup(args, tracking)
        if args.worker_index is not None:
            st.parent_run_id = st.load().user_attrs["mlflow_parent_run_id"]
            return run_worker(Worker(st, f"w{args.worker_index}"), args.timeout)
        dataset(st.base.data_dir)  # missing or corrupt data: say so before creating anything
        tracking.check_store(st.base.experiment_name)
        create_or_join(st)
    except (ConfigError, DataError, tracking.TrackingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"study: {args.study_name}")
    print(f"parent_run_id: {st.parent_run_id}")
    gpus = args.gpus if args.gpus is not None else visible_gpus()
    n_workers = args.workers or max(1, len(gpus))
    code, status = 0, "FINISHED"
    try:
        if n_workers == 1 and args.gpus is None:
            Worker(st, "tune").run(args.timeout)
        else:
            code = launch_workers(st, __file__, argv, n_workers, gpus)
            status = "FINISHED" if code == 0 else "FAILED"
    except KeyboardInterrupt as e:
        code, status = stop_exit_code(e), "KILLED"
        print(f"\n{stop_cause(e)}: rerun the same command to resume the study", file=sys.stderr)
    return finish_study(st, code, status)


def run_worker(worker: Worker, timeout: float | None) -> int:
    try:
        worker.run(timeout)
    except KeyboardInterrupt as e:
        return stop_exit_code(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
