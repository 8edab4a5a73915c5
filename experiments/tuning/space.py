"""The search space: a YAML mapping of config field -> distribution, checked against the
base config, and the suggest_* calls that draw a trial's values from it.

A parameter with `when: {field: [values]}` applies only while each named field holds one of its
values, e.g. momentum only for sgd and rmsprop. A field named in `when` is either a categorical
parameter of the space, drawn first, or a field the space leaves to the base config, whose
value is then fixed for the whole study. A trial carries a parameter only when it applies.
"""

from __future__ import annotations

import dataclasses
import math
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
    read_yaml,
    to_dict,
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
    # ((field, values), ...): drawn only while every field holds one of its values.
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether the parameter applies to a config holding these field values."""
        return all(values[field] in allowed for field, allowed in self.when)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if not self.low <= value <= self.high:
            return False
        return self.step is None or math.isclose(
            (value - self.low) / self.step, round((value - self.low) / self.step), abs_tol=1e-9
        )

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {', '.join(map(str, self.choices))}"
        return f"[{self.low}, {self.high}]" + (f" in steps of {self.step}" if self.step else "")


SPEC_KEYS = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
}
SPACE_EXAMPLE = "lr: {type: float, low: 1.0e-4, high: 0.3, log: true}"
WHEN_EXAMPLE = "when: {optimizer: [sgd, rmsprop]}"


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
    space = {
        str(name): _param(f"{where}: {name}", str(name), spec, base) for name, spec in raw.items()
    }
    for name, spec in raw.items():
        if "when" in spec:
            when = _when(f"{where}: {name}: when", str(name), spec["when"], space, base)
            space[str(name)] = dataclasses.replace(space[str(name)], when=when)
    return _parents_first(where, space)


def _valid(base: Config, name: str, v: Any, where: str, what: str) -> Any:
    """v as the field's type, checked by the same rules as any config."""
    try:
        return getattr(validate(apply(base, {name: v}, where)), name)
    except ConfigError as e:
        raise ConfigError(f"{where}: {what} {v!r} gives an invalid config: {e}") from None


def _when(
    where: str, name: str, spec: Any, space: Mapping[str, Param], base: Config
) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: needs a mapping of field to values, e.g. {WHEN_EXAMPLE}")
    out = []
    for field, values in spec.items():
        field = str(field)
        if field not in FIELDS:
            raise ConfigError(
                f"{where}: {field} is not a config field; allowed: {', '.join(FIELDS)}"
            )
        if field in NOT_SEARCHABLE:
            raise ConfigError(
                f"{where}: {field} is a tracking or machine setting, not a hyperparameter"
            )
        if field == name:
            raise ConfigError(f"{where}: a parameter cannot depend on itself")
        values = values if isinstance(values, list) else [values]
        if not values or any(isinstance(v, (list, dict)) or v is None for v in values):
            raise ConfigError(
                f"{where}: {field} needs a value or a non-empty list of plain values, "
                f"e.g. {WHEN_EXAMPLE}; got {spec[field]!r}"
            )
        coerced = tuple(_valid(base, field, v, where, f"{field} value") for v in values)
        parent = space.get(field)
        if parent is not None and parent.kind != "categorical":
            raise ConfigError(
                f"{where}: {field} is a {parent.kind} parameter; a condition can name a "
                "categorical parameter or a field the space leaves to the base config"
            )
        outside = [v for v in coerced if parent is not None and v not in parent.choices]
        if outside:
            raise ConfigError(
                f"{where}: {field} {', '.join(map(repr, outside))} is not among its choices "
                f"({parent.describe()}), so the condition could never hold for it"
            )
        out.append((field, coerced))
    return tuple(out)


def _parents_first(where: str, space: dict[str, Param]) -> dict[str, Param]:
    """The space in file order, except that a parameter comes after those its `when` names, so
    suggest() has drawn them when it asks whether it applies."""
    ordered: dict[str, Param] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise ConfigError(f"{where}: the conditions form a cycle ({cycle}); remove one `when`")
        if name in ordered or name not in space:
            return
        for parent, _ in space[name].when:
            visit(parent, (*path, name))
        ordered[name] = space[name]

    for name in space:
        visit(name, ())
    return ordered


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
        return _valid(base, name, v, where, what)

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


def suggest(
    trial: optuna.trial.BaseTrial, space: Mapping[str, Param], base: Config
) -> dict[str, Any]:
    """One value per parameter that applies, given base and what was drawn before it. A
    re-queued or enqueued trial already holds its params; Optuna returns them."""
    out: dict[str, Any] = {}
    values = to_dict(base)
    for name, p in space.items():
        if not p.applies(values):
            continue
        if p.kind == "categorical":
            out[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.kind == "int":
            out[name] = trial.suggest_int(name, p.low, p.high, step=int(p.step or 1), log=p.log)
        else:
            out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
        values[name] = out[name]
    return out


def base_params(base: Config, space: Mapping[str, Param]) -> dict[str, Any]:
    """The base config as a trial (the baseline): its value of each parameter that applies to it,
    each of which must lie in the space, or the study could not run it."""
    values = to_dict(base)
    params = {name: values[name] for name, p in space.items() if p.applies(values)}
    for name, value in params.items():
        if not space[name].contains(value):
            raise ConfigError(
                f"the baseline (trial 0) is the base config, whose {name} {value!r} lies outside "
                f"the search space ({space[name].describe()}); widen --space, set {name} with "
                "--config or a flag, or pass --no-baseline"
            )
    return params


def enqueued_params(path: str, base: Config, space: Mapping[str, Param]) -> dict[str, Any]:
    """An experiment file (a best.yaml, experiments/configs/*.yaml) as a trial's fixed params:
    its values of the space's parameters that apply. Parameters it leaves out are sampled; a
    field outside the space must hold the base config's value, or no trial could run it."""
    where = f"--enqueue {path}"
    try:
        given = read_yaml(path)
        values = to_dict(validate(apply(base, given, path)))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    fixed = [
        k
        for k in given
        if k not in space and k not in NOT_SEARCHABLE and values[k] != getattr(base, k)
    ]
    if fixed:
        differ = ", ".join(f"{k}: {values[k]!r} (base: {getattr(base, k)!r})" for k in fixed)
        raise ConfigError(
            f"{where}: {differ} differs from the base config and is not searched, so no trial "
            "could run it; set it in --config or a flag, add it to --space, or drop it"
        )
    params = {}
    for name, p in space.items():
        if name in given and p.applies(values):
            if not p.contains(values[name]):
                raise ConfigError(
                    f"{where}: {name}: {values[name]!r} is outside the search space "
                    f"({p.describe()}); widen --space or change the file"
                )
            params[name] = values[name]
    if not params:
        raise ConfigError(
            f"{where}: sets none of the searched parameters ({', '.join(space)}); "
            "the trial would be an ordinary sampled one"
        )
    return params
