"""Train one FashionMNIST classifier: flags -> config -> engine -> MLflow, read top to bottom.

python train.py --config experiments/configs/speedrun.yaml
python train.py --resume RUN_ID
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from data_utils import DataError
from experiments.checkpoint import CheckpointError, load_checkpoint, restore_model
from experiments.cli import model_name, run_tool, setup_done
from experiments.config import (
    Config,
    ConfigError,
    add_config_flags,
    apply,
    flag_overrides,
    load_config,
    validate,
)
from experiments.engine import dataset, failure_reason, train
from experiments.stops import DivergenceError, stop_cause, stop_exit_code, stop_on_sigterm
from models import build_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train one FashionMNIST classifier and record it in MLflow "
        "(tracking URI: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db).",
        epilog="Ctrl-C and SIGTERM stop a run KILLED (exit 130, 143), resumable with --resume. "
        "While the tracking store fails, training goes on and what could not be sent is sent "
        "later; after $FASHION_LAB_TRACKING_OUTAGE_S seconds (default 300) the run stops (exit "
        "1) and prints the local checkpoint to --resume.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="YAML",
        default=None,
        help="experiment file under experiments/ holding only what differs from the defaults",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_ID|PATH",
        default=None,
        help="continue this MLflow run from its checkpoints/last.pt with its own config, or "
        "the run a local checkpoint names (the copy a long tracking outage leaves). Only "
        "--epochs may come with it, to extend a run whose schedule is none: one-cycle and "
        "cosine spread their lr curve over the run's length, so those runs cannot be extended",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="smoke test: 1 epoch on 512 training images, nothing but the checks and the loop",
    )
    parser.add_argument(
        "--register",
        metavar="NAME",
        type=model_name,
        default=None,
        help="register the run's model as a new version of NAME in MLflow's Model Registry: "
        "alias champion if its best val accuracy beats the champion's, else challenger; needs a "
        "val split (default: not registered)",
    )
    add_config_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config, flag_overrides(args))
    if args.dry_run:
        cfg = apply(cfg, {"epochs": 1, "train_subset": 512, "warmup_epochs": 0}, "--dry-run")
    return validate(cfg)


def given_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--" + k.replace("_", "-") for k in flag_overrides(args)]
    return flags + [f for f, on in (("--config", args.config), ("--dry-run", args.dry_run)) if on]


def resume_from(
    args: argparse.Namespace, tracking: Any
) -> tuple[Config, dict[str, Any], str | None]:
    """--resume RUN_ID or PATH: the checkpoint, its config (only --epochs may change it) and
    the run to continue (None: a checkpoint that names no run starts a new one)."""
    others = [f for f in given_flags(args) if f != "--epochs"]
    if others:
        raise ConfigError(
            f"--resume continues a run with the config it started with; {', '.join(others)} "
            "cannot change it (only --epochs can, to extend the run)"
        )
    if os.sep in args.resume or args.resume.endswith(".pt"):
        state = load_checkpoint(Path(args.resume))
        run_id = state.get("mlflow_run_id")
        if run_id:
            tracking.get_run(run_id)
    else:
        with tracking.downloaded_checkpoint(args.resume) as path:
            state = load_checkpoint(path)
        run_id = args.resume
    cfg = validate(apply(load_config(), state["config"], args.resume))
    restore_model(build_model(cfg.model, cfg.width), state["model"], args.resume)
    if "epochs" in vars(args):
        cfg = extend(cfg, args.epochs)
    return cfg, state, run_id


def extend(cfg: Config, epochs: int) -> Config:
    """More epochs for a resumed run, where the lr curve does not depend on the run's length."""
    if epochs < cfg.epochs:
        raise ConfigError(
            f"--epochs {epochs}: the run is {cfg.epochs} epochs long; --resume can extend a run, "
            "not shorten it"
        )
    if epochs > cfg.epochs and cfg.schedule != "none":
        raise ConfigError(
            f"--epochs {epochs}: this run's {cfg.schedule} schedule spreads its lr curve over "
            f"{cfg.epochs} epochs, so it cannot be extended (only schedule none can); start a "
            f"new run with --epochs {epochs}"
        )
    return validate(apply(cfg, {"epochs": epochs}, "--epochs"))


def registration(args: argparse.Namespace, cfg: Config, tracking: Any) -> Any:
    """--register NAME: checked before training, since versions are ranked on val accuracy."""
    if not args.register:
        return None
    if args.dry_run:
        raise ConfigError("--register: --dry-run logs no model to register; leave one out")
    if not cfg.val_size:
        raise ConfigError(
            "--register ranks versions by best val accuracy, and this run has no val split "
            "(val_size 0); give it one (--val-size 5000), or register it by hand"
        )
    return tracking.Registration(args.register)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    from experiments import tracking  # importing mlflow costs seconds; --help should not wait

    try:
        if args.resume:
            cfg, state, run_id = resume_from(args, tracking)
        else:
            cfg, state, run_id = config_from_args(args), None, None
        dataset(cfg.data_dir)
        register = registration(args, cfg, tracking)
        tracking.check_access(cfg.experiment_name, args.register)
        logger = tracking.MlflowCallback(
            cfg, run_id=run_id, log_model=not args.dry_run, register=register
        )
    except (ConfigError, DataError, CheckpointError, tracking.TrackingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_done()
    try:
        result = train(cfg, [logger], resume=state)
    except DivergenceError as e:
        print(f"error: run {logger.run_id} diverged: {e}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError as e:
        print(f"error: run {logger.run_id}: {failure_reason(cfg, e)}", file=sys.stderr)
        return 1
    except tracking.TrackingOutage as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        run = f": run {logger.run_id} stopped; continue it with --resume {logger.run_id}"
        print(f"\n{stop_cause(e)}{run if logger.run_id else ''}", file=sys.stderr)
        return stop_exit_code(e)
    print(f"run_id: {logger.run_id}")
    print(f"test_accuracy: {result.test_accuracy:.4f}")
    print(f"wall_time_s: {result.wall_s:.1f}")
    return 0


if __name__ == "__main__":
    run_tool(main)
