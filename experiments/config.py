"""The one config schema: defaults, then a YAML experiment file, then CLI flags."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from models import INIT_SCHEMES, MODELS
from models.losses import LOSSES
from models.optim import OPTIMIZERS, SCHEDULES


class ConfigError(ValueError):
    """A config that cannot run. The message names the key and what it accepts."""


def _f(default: Any, why: str) -> Any:
    return field(default=default, metadata={"help": why})


@dataclass
class Config:
    # What is trained. The defaults are the recipe that won benchmarks/RESULTS.md on a 2-core CPU.
    model: str = _f("cnn_bn", "network from the models/ registry")
    width: int = _f(0, "base channel count; 0 keeps the model's own default")
    init: str = _f("default", "weight-init scheme applied after construction")
    # How it is optimized.
    optimizer: str = _f("sgd", "torch.optim algorithm, built by one factory")
    lr: float = _f(0.1, "peak learning rate (one-cycle reaches it after the warmup)")
    momentum: float = _f(0.9, "momentum for sgd and rmsprop; ignored by the others")
    nesterov: bool = _f(True, "Nesterov momentum for sgd")
    # The Adam family's own knobs, passed as betas=(beta1, beta2) and eps; their defaults are
    # torch's, so a run that leaves them alone trains as before they existed.
    beta1: float = _f(0.9, "first-moment decay of adam, adamw, nadam, radam, adamax")
    beta2: float = _f(0.999, "second-moment decay of the Adam family; lower adapts faster")
    eps: float = _f(1e-8, "the Adam family's denominator floor; larger damps rare-gradient steps")
    # A fresh linear head may want another pace than the convolutional body that feeds it.
    head_lr_scale: float = _f(1.0, "the classifier head's lr relative to the body's")
    weight_decay: float = _f(5e-4, "decoupled for adamw, L2 otherwise; never on norms or biases")
    schedule: str = _f("onecycle", "learning-rate schedule, stepped every batch")
    warmup_epochs: float = _f(1.0, "linear warmup length; one-cycle uses it as its rising phase")
    loss: str = _f("cross_entropy", "training loss by name")
    label_smoothing: float = _f(0.1, "cross-entropy label smoothing; regularizes short runs")
    # The data it sees.
    epochs: int = _f(15, "passes over the training split")
    batch_size: int = _f(256, "images per optimizer step")
    augment: bool = _f(True, "random horizontal flip (and crop, if pad > 0), done per batch")
    pad: int = _f(0, "crop padding in pixels when augment is on; 0 = flip only")
    val_size: int = _f(5000, "held-out slice of the 60k training file; 0 trains on all 60k")
    train_subset: int = _f(0, "train on the first N samples of the training split; 0 = all")
    data_dir: str = _f("", "folder with the four IDX .gz files; empty searches the usual places")
    # How it runs.
    seed: int = _f(0, "seeds init, shuffling, augmentation and dropout")
    device: str = _f("auto", "auto picks CUDA when present")
    precision: str = _f("auto", "bf16 autocast or fp32; auto = bf16 on CUDA, or where timed faster")
    threads: int = _f(0, "CPU threads for torch; 0 = one per physical core")
    log_every: int = _f(50, "steps between train_loss points (and the only host syncs)")
    max_loss: float = _f(1e3, "a training loss above this counts as divergence and stops the run")
    checkpoint: bool = _f(True, "write checkpoints/last.pt each epoch and best.pt on improvement")
    # Where it is recorded.
    experiment_name: str = _f("fashion-lab", "MLflow experiment the run goes into")
    run_name: str = _f("", "MLflow run name; empty derives one like cnn_bn-sgd-lr1e-1-bs256")
    # Sampled on a thread every 10 s and sent with the epoch's metrics, so it costs no time;
    # off where the machine's load says nothing about the run (a node shared with other jobs).
    system_metrics: bool = _f(True, "log CPU, memory (and GPU) use as system/ metrics")


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in fields(Config)}
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


# The fields that name something: each value must be one of these (the registries' names).
CHOICES: dict[str, Sequence[str]] = {
    "model": sorted(MODELS),
    "optimizer": OPTIMIZERS,
    "init": INIT_SCHEMES,
    "loss": LOSSES,
    "schedule": SCHEDULES,
    "device": DEVICES,
    "precision": PRECISIONS,
}


def _coerce(name: str, value: Any) -> Any:
    """Turn a YAML or CLI value into the field's type, or say why it can't be."""
    kind = FIELDS[name].type
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    caster = {"int": int, "float": float, "str": str}[kind]
    if kind == "int" and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if isinstance(value, bool) and kind != "str":
        raise ConfigError(f"{name}: expected a {kind}, got {value!r}")
    try:
        return caster(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a {kind}, got {value!r}") from None


def apply(cfg: Config, overrides: Mapping[str, Any], source: str) -> Config:
    """Return cfg with overrides applied; unknown keys are an error naming the allowed ones."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)} in {source}; "
            f"allowed keys: {', '.join(FIELDS)}"
        )
    return dataclasses.replace(cfg, **{k: _coerce(k, v) for k, v in overrides.items()})


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment file: a flat mapping holding only what differs from the defaults."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file {p} does not exist; see experiments/configs/*.yaml for examples"
        )
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of key: value")
    return data


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] = ()) -> Config:
    """Defaults, then the YAML file at path, then overrides (usually CLI flags)."""
    cfg = Config()
    if path:
        cfg = apply(cfg, read_yaml(path), str(path))
    return apply(cfg, dict(overrides), "the command line")


def validate(cfg: Config) -> Config:
    """Check every field once, before anything runs: names against CHOICES, numbers by range."""
    for name, allowed in CHOICES.items():
        value = getattr(cfg, name)
        if value not in allowed:
            raise ConfigError(f"{name}: unknown value {value!r}; allowed: {', '.join(allowed)}")
    checks = [
        ("lr", cfg.lr > 0, "must be > 0"),
        ("batch_size", cfg.batch_size >= 1, "must be >= 1"),
        ("epochs", cfg.epochs >= 1, "must be >= 1"),
        ("width", cfg.width >= 0, "must be >= 0 (0 = model default)"),
        ("momentum", 0 <= cfg.momentum < 1, "must be in [0, 1)"),
        ("beta1", 0 <= cfg.beta1 < 1, "must be in [0, 1)"),
        ("beta2", 0 <= cfg.beta2 < 1, "must be in [0, 1)"),
        ("eps", cfg.eps > 0, "must be > 0"),
        ("head_lr_scale", cfg.head_lr_scale > 0, "must be > 0"),
        ("weight_decay", cfg.weight_decay >= 0, "must be >= 0"),
        ("warmup_epochs", 0 <= cfg.warmup_epochs <= cfg.epochs, "must be in [0, epochs]"),
        ("label_smoothing", 0 <= cfg.label_smoothing < 1, "must be in [0, 1)"),
        ("pad", 0 <= cfg.pad <= 8, "must be in [0, 8]"),
        ("val_size", 0 <= cfg.val_size < 60000, "must be in [0, 60000)"),
        ("train_subset", cfg.train_subset >= 0, "must be >= 0 (0 = all)"),
        ("threads", cfg.threads >= 0, "must be >= 0 (0 = one per core)"),
        ("log_every", cfg.log_every >= 1, "must be >= 1"),
        ("max_loss", cfg.max_loss > 0, "must be > 0"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise ConfigError(f"{name}: {rule}, got {getattr(cfg, name)!r}")
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given as flags (add_config_flags leaves the others out of args)."""
    return {k: v for k, v in vars(args).items() if k in FIELDS}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One kebab-case flag per field. Defaults are SUPPRESSed so only given flags override YAML."""
    group = parser.add_argument_group("config (each overrides the YAML and the default)")
    for f in fields(Config):
        why = f.metadata["help"]
        extra = f"; one of: {', '.join(CHOICES[f.name])}" if f.name in CHOICES else ""
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if f.type == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = {"int": int, "float": float, "str": str}[f.type]
            kw["metavar"] = f.name.upper()
        flag = "--" + f.name.replace("_", "-")
        group.add_argument(flag, help=f"{why}{extra} (default: {f.default!r})", **kw)
