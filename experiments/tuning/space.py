"""The search space: a YAML mapping of config field -> distribution, checked against the
base config, and the suggest_* calls that draw a trial's values from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from experiments.config import (
    FIELDS,
    Config,
    ConfigError,
    apply,
    validate,
)

# Settings that name a machine's own resources: nodes of one study may differ in these.
PER_MACHINE = ("device", "threads", "data_dir")
# Tracking settings are not hyperparameters; a trial's run name is its number.
NOT_SEARCHABLE = ("run_name", "experiment_name", *PER_MACHINE)


@dataclass(frozen=True)
class Param:
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


SPEC_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
SPACE_EXAMPLE = "lr: {type: float, low: 1.0e-4, high: 0.3, log: true}"


def load_space(path: str | Path, base: Config) -> dict[str, Param]:
    """Read and check a search space; every endpoint and choice must make base a valid config."""
    p = Path(path)
    where = f"search space {p}"
    if not p.is_file():
        raise ConfigError(f"{where} does not exist; see experiments/spaces/default.yaml")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {e}") from None
    if not raw:
        raise ConfigError(
            f"{where} is empty; it needs at least one parameter, e.g. {SPACE_EXAMPLE}"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must map config fields to distributions, e.g. {SPACE_EXAMPLE}")
    return {
        str(name): _param(f"{where}: {name}", str(name), spec, base) for name, spec in raw.items()
    }


def _param(where: str, name: str, spec: Any, base: Config) -> Param:
    if name not in FIELDS:
        raise ConfigError(f"{where}: not a config field; allowed: {', '.join(FIELDS)}")
    if name in NOT_SEARCHABLE:
        raise ConfigError(f"{where}: a tracking or machine setting, not a hyperparameter")
    if not isinstance(spec, dict) or spec.get("type") not in SPEC_KEYS:
        raise ConfigError(
            f"{where}: needs a mapping with type: float, int or categorical, e.g. {SPACE_EXAMPLE}"
        )
    kind, field_type = spec["type"], FIELDS[name].type
    extra = sorted(set(spec) - SPEC_KEYS[kind])
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)} for type {kind}")

    def value(v: Any, what: str) -> Any:
        """The value as the field's type, checked by the same rules as any config."""
        try:
            return getattr(validate(apply(base, {name: v}, where)), name)
        except ConfigError as e:
            raise ConfigError(f"{where}: {what} {v!r} gives an invalid config: {e}") from None

    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        if any(isinstance(c, (list, dict)) or c is None for c in choices):
            raise ConfigError(f"{where}: choices must be plain values, got {choices!r}")
        coerced = tuple(value(c, "choice") for c in choices)
        if len(set(coerced)) < len(coerced):
            raise ConfigError(f"{where}: choices repeat a value: {choices!r}")
        return Param(kind, choices=coerced)

    if field_type != kind:
        raise ConfigError(
            f"{where}: the field is {field_type}, so use type {field_type} or categorical"
        )
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: type {kind} needs low and high")
    low, high = value(spec["low"], "low"), value(spec["high"], "high")
    if not low < high:
        raise ConfigError(f"{where}: low must be < high, got low={low!r} high={high!r}")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {low!r}")
    if step is not None:
        if log:
            raise ConfigError(f"{where}: step and log: true cannot be combined")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ConfigError(f"{where}: step must be a number > 0, got {step!r}")
        if kind == "int" and not float(step).is_integer():
            raise ConfigError(f"{where}: step must be an integer for type int, got {step!r}")
    return Param(kind, low=low, high=high, log=log, step=step)


def suggest(trial: optuna.trial.BaseTrial, space: Mapping[str, Param]) -> dict[str, Any]:
    """One value per parameter. A re-queued trial already holds its params; Optuna returns them."""
    out = {}
    for name, p in space.items():
        if p.kind == "categorical":
            out[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.kind == "int":
            out[name] = trial.suggest_int(name, p.low, p.high, step=int(p.step or 1), log=p.log)
        else:
            out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return out
