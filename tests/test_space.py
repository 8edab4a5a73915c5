"""The search space: a YAML file checked against the base config, and what a trial draws from it."""

from __future__ import annotations

import optuna
import pytest
from conftest import ROOT
from helpers import write

from experiments.config import CHOICES, Config, ConfigError, apply, validate
from experiments.tuning.space import Param, load_space, suggest

DEFAULT_SPACE = ROOT / "experiments" / "spaces" / "default.yaml"


def test_default_space_covers_lr_batch_size_init_and_optimizer():
    space = load_space(DEFAULT_SPACE, Config())
    assert space["lr"] == Param("float", low=1e-4, high=0.3, log=True)
    assert space["batch_size"].choices == (64, 128, 256, 512)
    assert set(space["init"].choices) == set(CHOICES["init"])
    assert set(space["optimizer"].choices) == set(CHOICES["optimizer"])


def test_suggest_returns_fixed_values_and_samples_within_the_space():
    space = load_space(DEFAULT_SPACE, Config())
    fixed = {"lr": 0.01, "batch_size": 128, "init": "orthogonal", "optimizer": "adamw"}
    fixed |= {"beta2": 0.99, "eps": 1e-9}  # adamw's; sgd's momentum and nesterov do not apply
    assert suggest(optuna.trial.FixedTrial(fixed), space, Config()) == fixed

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        params = suggest(study.ask(), space, Config())
        assert 1e-4 <= params["lr"] <= 0.3
        assert params["batch_size"] in (64, 128, 256, 512)
        validate(apply(Config(), params, "test"))  # every draw is a runnable config


def test_int_and_stepped_float_parameters():
    space = {
        "epochs": Param("int", low=2, high=6, step=2),
        "momentum": Param("float", low=0.8, high=0.95, step=0.05),
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        p = suggest(study.ask(), space, Config())
        assert p["epochs"] in (2, 4, 6)
        assert round(p["momentum"] / 0.05, 6).is_integer()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("[lr, batch_size]", "must map config fields to distributions"),
        ("num_layers: {type: int, low: 1, high: 3}", "num_layers: not a config field"),
        ("run_name: {type: categorical, choices: [a, b]}", "not a hyperparameter"),
        ("lr: {type: normal, low: 0.1, high: 1}", "type: float, int or categorical"),
        ("lr: 0.1", "type: float, int or categorical"),
        ("lr: {type: float, low: 0.3, high: 0.001}", "low must be < high"),
        ("lr: {type: float, low: 0.1, high: 0.1}", "low must be < high"),
        ("lr: {type: float, low: 0, high: 0.1}", "lr: must be > 0"),
        ("lr: {type: float, low: 0.1}", "needs low and high"),
        ("lr: {type: float, lo: 0.1, high: 1}", "unknown key(s) lo"),
        ("weight_decay: {type: float, low: 0, high: 0.1, log: true}", "log: true needs low > 0"),
        ("lr: {type: float, low: 0.01, high: 1, log: yes please}", "log must be true or false"),
        ("batch_size: {type: float, low: 32, high: 512}", "the field is int"),
        ("batch_size: {type: int, low: 32, high: 512, step: 0.5}", "step must be an integer"),
        ("optimizer: {type: categorical, choices: []}", "choices must be a non-empty list"),
        ("optimizer: {type: categorical, choices: [sgd, lion]}", "allowed: sgd, adam"),
        ("init: {type: categorical, choices: [he]}", "allowed: default, xavier_uniform"),
        ("batch_size: {type: categorical, choices: [64, big]}", "batch_size: expected a int"),
        ("batch_size: {type: categorical, choices: [64, 64]}", "repeat a value"),
    ],
)
def test_invalid_space_names_the_problem(tmp_path, text, says):
    with pytest.raises(ConfigError, match="search space") as e:
        load_space(write(tmp_path, "space.yaml", text), Config())
    assert says in str(e.value)


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 reads 1e-4 as a string; the space must still take it as a float.
    space = load_space(
        write(tmp_path, "s.yaml", "lr: {type: float, low: 1e-4, high: 1e-1}"), Config()
    )
    assert (space["lr"].low, space["lr"].high) == (1e-4, 0.1)


# --- conditional parameters ---------------------------------------------------------------------

CONDITIONAL = """\
momentum: {type: float, low: 0.5, high: 0.99, when: {optimizer: [sgd, rmsprop]}}
nesterov: {type: categorical, choices: [true, false], when: {optimizer: sgd}}
optimizer: {type: categorical, choices: [sgd, adam, rmsprop]}
"""


def test_a_parameter_is_drawn_only_where_its_condition_holds(tmp_path):
    space = load_space(write(tmp_path, "s.yaml", CONDITIONAL), Config())
    # File order, except that the optimizer is drawn before the parameters that depend on it.
    assert list(space) == ["optimizer", "momentum", "nesterov"]
    assert space["momentum"].when == (("optimizer", ("sgd", "rmsprop")),)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = suggest(trial, space, Config())
        optimizer = params["optimizer"]
        expected = {"sgd": {"momentum", "nesterov"}, "rmsprop": {"momentum"}, "adam": set()}
        assert set(params) - {"optimizer"} == expected[optimizer]
        assert set(trial.params) == set(params)  # what Optuna records, too
        seen.add(optimizer)
        study.tell(trial, 0.0)
    assert seen == {"sgd", "adam", "rmsprop"}


def test_a_condition_on_a_field_outside_the_space_reads_the_base_config(tmp_path):
    path = write(
        tmp_path, "s.yaml", "momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: sgd}}\n"
    )
    for optimizer, drawn in [("sgd", {"momentum"}), ("adam", set())]:
        base = validate(apply(Config(), {"optimizer": optimizer}, "test"))
        trial = optuna.create_study().ask()
        assert set(suggest(trial, load_space(path, base), base)) == drawn


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("when: [optimizer]", "when: needs a mapping of field to values"),
        ("when: {}", "when: needs a mapping of field to values"),
        ("when: {optimizer: []}", "optimizer needs a value or a non-empty list"),
        ("when: {optimizer: [[sgd]]}", "optimizer needs a value or a non-empty list"),
        ("when: {optimiser: sgd}", "when: optimiser is not a config field"),
        ("when: {device: cpu}", "device is a tracking or machine setting"),
        ("when: {momentum: 0.9}", "a parameter cannot depend on itself"),
        ("when: {optimizer: lion}", "optimizer: unknown value 'lion'"),
        ("when: {optimizer: adamw}", "optimizer 'adamw' is not among its choices (one of sgd"),
        ("when: {lr: 0.1}", "lr is a float parameter; a condition can name a categorical"),
        ("when: {optimizer: sgd}\n  hmm: 1", "unknown key(s) hmm"),
    ],
)
def test_a_malformed_condition_names_the_problem(tmp_path, text, says):
    space = (
        "optimizer: {type: categorical, choices: [sgd, adam]}\n"
        "lr: {type: float, low: 0.01, high: 0.1}\n"
        f"momentum:\n  type: float\n  low: 0.5\n  high: 0.9\n  {text}\n"
    )
    with pytest.raises(ConfigError, match="search space") as e:
        load_space(write(tmp_path, "space.yaml", space), Config())
    assert says in str(e.value)


def test_conditions_that_form_a_cycle_are_refused(tmp_path):
    text = (
        "optimizer: {type: categorical, choices: [sgd, adam], when: {nesterov: true}}\n"
        "nesterov: {type: categorical, choices: [true, false], when: {optimizer: sgd}}\n"
    )
    with pytest.raises(ConfigError, match=r"cycle \(optimizer -> nesterov -> optimizer\)"):
        load_space(write(tmp_path, "s.yaml", text), Config())
