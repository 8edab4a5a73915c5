"""Run one Optuna study over the training engine, read as its lifecycle: flags, setup, launch
the workers, finish. One trial is one `train()` call and one MLflow child run.

The launching process checks every input, creates the study and its MLflow parent run, queues
--n-trials WAITING trials, then runs its workers. A worker claims queued trials one at a time
until none are left, so the study's total is exact however many workers, processes or machines
share it. Heartbeats mark a dead worker's trial FAIL; it is re-queued and resumes from the
checkpoint its MLflow run holds. The parts live in experiments/tuning/.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from data_utils import DataError
from experiments.cli import run_tool, setup_done
from experiments.config import ConfigError
from experiments.engine import dataset, estimate_seconds
from experiments.stops import stop_cause, stop_exit_code, stop_on_sigterm
from experiments.tuning.flags import build_parser
from experiments.tuning.launcher import launch_workers, visible_gpus
from experiments.tuning.study import create_or_join, plan, setup
from experiments.tuning.worker import Worker


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    from experiments import tracking  # importing mlflow costs seconds; --help should not wait

    try:
        st = setup(args, tracking)
        setup_done()
        if args.worker_index is not None:
            st.parent_run_id = st.load().user_attrs["mlflow_parent_run_id"]
            return run_worker(Worker(st, f"w{args.worker_index}"), args.timeout)
        dataset(st.base.data_dir)  # missing or corrupt data: say so before creating anything
        tracking.check_store(st.base.experiment_name, args.register if args.retrain_best else None)
        study = create_or_join(st)
    except (ConfigError, DataError, tracking.TrackingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"study: {args.study_name}")
    print(f"parent_run_id: {st.parent_run_id}")
    print(plan(st, study, estimate_seconds(st.base)), flush=True)
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
    # Only the launcher reports: its plotting stack (seaborn, scipy) would cost every worker
    # process a second of start-up.
    from experiments.tuning.report import finish_study

    return finish_study(st, code, status)


def run_worker(worker: Worker, timeout: float | None) -> int:
    try:
        worker.run(timeout)
    except KeyboardInterrupt as e:
        return stop_exit_code(e)
    return 0


if __name__ == "__main__":
    run_tool(main)
