"""The config: defaults, then YAML, then flags; validated once with messages that name the key."""

import re
from pathlib import Path

import pytest
from conftest import ROOT

import tune
from experiments.config import Config, ConfigError, load_config, to_yaml, validate
from experiments.tuning.space import load_space
from train import build_parser, config_from_args


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_layers_override_in_order(tmp_path):
    p = write(tmp_path, "lr: 0.01\nepochs: 3\n")
    args = build_parser().parse_args(["--config", str(p), "--epochs", "5", "--no-augment"])
    cfg = config_from_args(args)
    assert (cfg.lr, cfg.epochs, cfg.augment) == (0.01, 5, False)
    assert cfg.batch_size == Config().batch_size


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(overrides={"model": "mlp", "lr": 3e-3, "augment": False})
    again = load_config(write(tmp_path, to_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments" / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_experiment_file_validates(path):
    validate(load_config(path))


def space_pairings() -> list[tuple[str | None, str]]:
    """(base config, search space) as studies are run: every `--config X --space Y` in the
    Makefile, and tune.py's default space over the default config."""
    make = (ROOT / "Makefile").read_text()
    pairs: list[tuple[str | None, str]] = re.findall(r"--config (\S+) --space (\S+)", make)
    return [*pairs, (None, tune.build_parser().get_default("space"))]


def test_every_search_space_is_run_by_some_command():
    spaces = {str(p.relative_to(ROOT)) for p in (ROOT / "experiments" / "spaces").glob("*.yaml")}
    assert spaces and {space for _, space in space_pairings()} == spaces


@pytest.mark.parametrize(("config", "space"), space_pairings(), ids=lambda p: str(p))
def test_every_search_space_validates_against_the_config_it_is_run_with(config, space):
    base = validate(load_config(config and ROOT / config))
    # load_space checks every endpoint and choice as a config built on this base.
    assert load_space(ROOT / space, base)


def test_unknown_yaml_key_names_it_and_the_allowed_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) lr_max .*allowed keys: model"):
        load_config(write(tmp_path, "lr_max: 1\n"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": 0.0}, "lr: must be > 0"),
        ({"lr": -1.0}, "lr: must be > 0"),
        ({"batch_size": 0}, "batch_size: must be >= 1"),
        ({"epochs": 0}, "epochs: must be >= 1"),
        ({"model": "vgg"}, "model: unknown value 'vgg'; allowed: cnn_bn, mlp, resnet, stem_cnn"),
        ({"optimizer": "lion"}, "optimizer: unknown value 'lion'; allowed: sgd, adam"),
        ({"init": "he"}, "init: unknown value 'he'; allowed: default, xavier_uniform"),
        ({"loss": "hinge"}, "loss: unknown value 'hinge'; allowed: cross_entropy"),
        ({"schedule": "step"}, "schedule: unknown value 'step'"),
    ],
)
def test_bad_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config(overrides=overrides))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: three\n", "epochs: expected a int"),
        ("augment: maybe\n", "augment: expected true or false"),
        ("epochs: 2.5\n", "epochs: expected an integer"),
        ("- lr\n", "must hold a mapping"),
        ("lr: [1\n", "not valid YAML"),
    ],
)
def test_malformed_yaml_values(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_help_documents_every_flag_with_default_and_choices(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in [
        "--config",
        "--model",
        "--epochs",
        "--lr",
        "--batch-size",
        "--optimizer",
        "--init",
        "--seed",
        "--device",
        "--train-subset",
        "--data-dir",
        "--experiment-name",
        "--run-name",
        "--resume",
        "--dry-run",
    ]:
        assert flag in text
    assert "one of: cnn_bn, mlp, resnet, stem_cnn, tutorial_cnn (default: 'cnn_bn')" in text
    assert "one of: default, xavier_uniform, xavier_normal, kaiming_uniform" in text
