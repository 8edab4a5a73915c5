"""tune.py's flags: the study, its workers, and every config field as an override."""

from __future__ import annotations

import argparse

from experiments.cli import HelpFormatter, at_least, gpu_list, model_name, seconds
from experiments.config import add_config_flags
from experiments.tuning.storage import PRUNERS, SAMPLERS

EPILOG = """\
a study, in order:
  Trial 0 is the base config (--config plus flags), never pruned. Every trial trains for its
  full length and reports its val accuracy each epoch at step = percent of its run, the unit of
  the pruner's rungs. Then the --confirm-top best other configs and the baseline train again
  with --seeds fresh seeds; the winner is the highest mean that beats the baseline beyond seed
  noise (Welch p < 0.05), else the baseline, written as best.yaml. Ctrl-C or SIGTERM re-queues
  the running trial (exit 130, 143). Rerunning the command resumes the study, and with a
  larger --n-trials extends it. Trials keep their checkpoints only while a retry or the best
  needs them.

many machines:
  The same command on every node, with --storage postgresql://user@host/db (the password in
  PGPASSWORD or ~/.pgpass) and MLFLOW_TRACKING_URI=http://host:port. More: docs/tuning.md and
  docs/multi-node.md.
"""


def confirm_seeds(text: str) -> int:
    try:
        return at_least(2)(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(
            f"{e}: a confidence interval needs 2 seeds or more (--confirm-top 0 skips confirmation)"
        ) from None


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
        default="sha",
        help="stops trials whose val_accuracy, reported every epoch, lags the others': sha "
        "(successive halving) and hyperband compare them at rungs, median at every epoch; "
        "none runs every trial to its end",
    )
    add(
        "--prune-from-epoch",
        metavar="EPOCH",
        type=at_least(1),
        default=1,
        help="the first rung: the epoch of the base config's run at which trials are first "
        "compared (a trial of another length: at the same fraction of its own run); sha and "
        "hyperband compare again at --reduction-factor times that, and so on",
    )
    add(
        "--reduction-factor",
        metavar="N",
        type=at_least(2),
        default=3,
        help="sha and hyperband: at each rung, the best 1/N of the trials that reached it go on",
    )
    add(
        "--pruner-startup-trials",
        metavar="N",
        type=at_least(0),
        default=4,
        help="median pruner: trials that must complete before it prunes any",
    )
    add(
        "--no-baseline",
        action="store_true",
        help="leave the base config out (default: it is trial 0, never pruned, and confirmed "
        "beside the best configs, so the study says whether it found anything better)",
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
        "--register",
        metavar="NAME",
        type=model_name,
        default="fashion-lab",
        help="the registered model --retrain-best's model becomes a version of, ranked by its "
        "trial's val accuracy: alias champion if that beats the champion's, else challenger",
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
    add(
        "--enqueue",
        metavar="YAML",
        action="append",
        default=None,
        help="run this experiment file (a best.yaml, experiments/configs/X.yaml) as one of the "
        "first trials: its values of the searched parameters are fixed, the others sampled; "
        "repeatable, counted within --n-trials, queued once however often the command is rerun "
        "(default: none)",
    )
    add(
        "--patience",
        metavar="N",
        type=at_least(1),
        default=None,
        help="stop the study when N finished (complete or pruned) trials in a row bring no new "
        "best; its queued trials are dropped (default: off, run all --n-trials)",
    )

    add = parser.add_argument_group("confirmation (see 'confirmation' below)").add_argument
    add(
        "--confirm-top",
        metavar="K",
        type=at_least(0),
        default=3,
        help="after the search, retrain the K best complete configs with --seeds fresh seeds "
        "each; best.yaml is then the highest mean; 0 skips it",
    )
    add(
        "--seeds",
        metavar="N",
        type=confirm_seeds,
        default=5,
        help="fresh seeds per confirmed config (at least 2: a confidence interval needs 2)",
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
