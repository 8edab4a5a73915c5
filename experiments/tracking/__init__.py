"""Everything that talks to MLflow, and the only code that imports it. The engine only sees a
callback (`MlflowCallback`); tune.py records a study through the functions of `study`.

What a run records (the names tests and users rely on):
- params: every config field under its own name, plus `n_params` and the resolved `device` and
  `precision`;
- metrics: `train_loss` per logging interval (step = global step); `val_loss`, `val_accuracy`,
  `epoch_time_s`, `train_images_per_s`, `train_loss_epoch` per epoch (step = epoch);
  `best_val_accuracy`, `test_accuracy`, `test_loss` and `test_accuracy_class_*` at the end
  (step = epochs); unless system_metrics is off, `system/*` (cpu_utilization_percentage,
  system_memory_usage_megabytes and _percentage, disk and network, and gpu_<i>_utilization_
  percentage and gpu_<i>_memory_usage_megabytes where nvidia-ml-py sees a GPU), one point per
  sample (step = sample number; every 10 s, $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL, and once
  as the run ends however it ends), sent with the epoch's metrics;
- datasets (the run's inputs): `fashion-mnist-train`, `-val` (with a val split) and `-test`,
  contexts `training`, `validation`, `test`; source: their IDX files; digest: of the files'
  MD5s, the split seed and sizes, so two runs share a digest exactly when they saw the same
  images; profile: the image count and the selection. No pixel is uploaded or hashed;
- artifacts: `checkpoints/last.pt` and `checkpoints/best.pt`, `config.yaml` (the resolved
  config), `plots/*.png`, and the model (`mlflow.pyfunc.load_model("runs:/<id>/model")` on raw
  pixels, `mlflow.pytorch.load_model` for the network), with its output signature and a raw
  input example;
- tags: `git_commit`, `dataset_md5`; `error` (FAILED) or `stop_reason` (KILLED).

Registered (train.py --register NAME, tune.py --retrain-best): the logged model becomes a new
version of NAME, no second upload. Its tags say what it is ranked by: `val_accuracy` (the run's
best_val_accuracy; a retrain's, the mean of its config's confirmation) and, for a retrain,
`val_accuracy_seeds` (each fresh seed's). The alias `champion` moves to it only on evidence of
a gain beyond seed noise (registry.py has the rules), else it is `challenger`; its description
gives the numbers. Through pyfunc the model takes raw 28x28 pixels and answers class names and
probabilities (pixel_classifier.py); `mlflow.pytorch.load_model("models:/NAME@champion")`
returns the bare network (normalized input, logits).

A study is one parent run (tag `optuna_study`; params sampler, pruner, space, config, seed;
`best_val_accuracy` per new best with step = trial number; `trials.csv`, `plots/`, `best.yaml`).
Each trial is a child run named `trial-NNN` with tags `optuna_study`, `optuna_trial_number` and
`optuna_state`, whose status mirrors the trial: COMPLETE -> FINISHED, PRUNED -> KILLED,
FAIL -> FAILED; the baseline (trial 0, the base config) is `trial-000-baseline`, tagged
`optuna_baseline` true. A trial is scored on val accuracy; tune.py --trial-test adds the test
metrics and plots.

Confirmation (tune.py --confirm-top K --seeds N) adds one child run of the parent named
`confirm` (the parent's tag `confirm_run_id` names it; tags `confirm_top`, `confirm_seeds`,
`confirmed_trial`; per config `val_accuracy_mean`, `val_accuracy_ci_low`,
`val_accuracy_ci_high`, `seeds_finished` and `p_vs_best` with step = trial number;
`confirm.csv`, `plots/confirm.png`) and under it one run per config and fresh seed,
`confirm-tNNN-sI`, tagged `optuna_study`, `confirm_trial` and `confirm_seed`, scored on val
accuracy like a trial. The parent gets the tag `confirmed_trial`, and the summary and verdict
(does the winner beat the baseline beyond seed noise?) in Markdown as its description.

The store is $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db with artifacts in
mlruns/artifacts/. A server with MLflow's basic-auth app takes MLflow's own credentials
($MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials), never a
password in the URI. Before anything trains, train.py checks them and the user's EDIT on the
experiment and on a registered model that --register adds to, tune.py MANAGE on the experiment
(`check_access`); a refusal then, or in the middle of a run, is TrackingRefused's message, and
a run refused midway stops as after a long outage, at once. `server` starts such a server.
"""

from experiments.tracking.access import check_access
from experiments.tracking.confirm import (
    SeedRun,
    delete_run,
    drop_checkpoints,
    log_confirmed,
    open_confirm_run,
    seed_runs,
)
from experiments.tracking.registry import Registration
from experiments.tracking.run import MODEL_REQUIREMENTS, MlflowCallback
from experiments.tracking.store import (
    DEFAULT_URI,
    OUTAGE_ENV,
    TrackingError,
    TrackingOutage,
    TrackingRefused,
    client,
    downloaded_checkpoint,
    experiment_id,
    get_run,
    outage_limit_s,
    tracking_uri,
)
from experiments.tracking.study import (
    check_store,
    delete_trial_checkpoints,
    end_run,
    end_trial_run,
    log_folder,
    log_retrain,
    log_study_best,
    log_text,
    reopen_run,
    start_study_run,
)

__all__ = [
    "DEFAULT_URI",
    "MODEL_REQUIREMENTS",
    "OUTAGE_ENV",
    "MlflowCallback",
    "Registration",
    "SeedRun",
    "TrackingError",
    "TrackingOutage",
    "TrackingRefused",
    "check_access",
    "check_store",
    "client",
    "delete_run",
    "delete_trial_checkpoints",
    "downloaded_checkpoint",
    "drop_checkpoints",
    "end_run",
    "end_trial_run",
    "experiment_id",
    "get_run",
    "log_confirmed",
    "log_folder",
    "log_retrain",
    "log_study_best",
    "log_text",
    "open_confirm_run",
    "outage_limit_s",
    "reopen_run",
    "seed_runs",
    "start_study_run",
    "tracking_uri",
]
