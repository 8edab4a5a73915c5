"""Statistical checks of the init schemes against their textbook formulas.

Expected values are written from the formulas (gains included) rather than taken from
``nn.init``, so a wrong fan, gain or distribution in ``initialize_weights`` fails here.
"""

import math

import pytest
import torch
from torch import nn

from models import INIT_SCHEMES, MODELS, build_model, initialize_weights

# calculate_gain's documented values, written out so the tests don't trust the function.
GAINS = {"relu": math.sqrt(2.0), "tanh": 5.0 / 3.0, "linear": 1.0}
NONLINEARITIES = sorted(GAINS)


LAYER_KINDS = ["linear", "conv"]


def _make_layer(kind: str) -> tuple[nn.Module, int, int]:
    """A large Linear or a Conv2d, with its (fan_in, fan_out) worked out by hand."""
    if kind == "linear":
        return nn.Linear(1024, 1024), 1024, 1024
    return nn.Conv2d(64, 128, kernel_size=3), 64 * 3 * 3, 128 * 3 * 3


def _assert_rel(actual: float, expected: float, rel: float) -> None:
    assert actual == pytest.approx(expected, rel=rel), (actual, expected)


def _assert_centered(w: torch.Tensor, std: float) -> None:
    # Five standard errors of the mean: loose enough never to flake, tight enough to catch a shift.
    assert abs(w.mean().item()) < 5 * std / math.sqrt(w.numel())


# The textbook std of each normal scheme and bound of each uniform one, from gain and fans.
NORMAL_STD = {
    "kaiming_normal": lambda gain, fan_in, fan_out: gain / math.sqrt(fan_in),
    "xavier_normal": lambda gain, fan_in, fan_out: gain * math.sqrt(2.0 / (fan_in + fan_out)),
}
UNIFORM_BOUND = {
    "kaiming_uniform": lambda gain, fan_in, fan_out: gain * math.sqrt(3.0 / fan_in),
    "xavier_uniform": lambda gain, fan_in, fan_out: gain * math.sqrt(6.0 / (fan_in + fan_out)),
}


def _init(scheme: str, kind: str, nonlinearity: str) -> tuple[torch.Tensor, float, float]:
    torch.manual_seed(0)
    layer, fan_in, fan_out = _make_layer(kind)
    initialize_weights(layer, scheme, nonlinearity)
    return layer.weight.detach(), fan_in, fan_out


@pytest.mark.parametrize("scheme", NORMAL_STD)
@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_normal_schemes_have_the_textbook_std(scheme: str, kind: str, nonlinearity: str) -> None:
    w, fan_in, fan_out = _init(scheme, kind, nonlinearity)
    std = NORMAL_STD[scheme](GAINS[nonlinearity], fan_in, fan_out)
    _assert_rel(w.std().item(), std, 0.03)
    _assert_centered(w, std)
    # A normal, unlike a uniform of the same std, has mass beyond sqrt(3) std.
    assert w.abs().max().item() > 3 * std


@pytest.mark.parametrize("scheme", UNIFORM_BOUND)
@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_uniform_schemes_fill_the_textbook_bound(scheme: str, kind: str, nonlinearity: str) -> None:
    w, fan_in, fan_out = _init(scheme, kind, nonlinearity)
    bound = UNIFORM_BOUND[scheme](GAINS[nonlinearity], fan_in, fan_out)
    assert w.abs().max().item() <= bound * (1 + 1e-6)
    assert w.abs().max().item() > 0.99 * bound
    _assert_rel(w.std().item(), bound / math.sqrt(3.0), 0.03)
    _assert_centered(w, bound / math.sqrt(3.0))


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_orthogonal_rows_are_orthonormal_times_gain(kind: str, nonlinearity: str) -> None:
    torch.manual_seed(0)
    layer, _, _ = _make_layer(kind)
    initialize_weights(layer, "orthogonal", nonlinearity)
    # Both test layers have no more rows than columns, so the rows are the orthogonal set.
    w = layer.weight.detach().flatten(1).double()
    assert w.shape[0] <= w.shape[1]
    gram = w @ w.T
    expected = GAINS[nonlinearity] ** 2 * torch.eye(w.shape[0], dtype=torch.float64)
    torch.testing.assert_close(gram, expected, rtol=0, atol=1e-4)


def test_orthogonal_tall_weight_has_orthonormal_columns() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(16, 256)
    initialize_weights(layer, "orthogonal", "relu")
    w = layer.weight.detach().double()
    torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(16, dtype=torch.float64), rtol=0, atol=1e-4)


def _truncated_std_factor(cut: float) -> float:
    """std of a standard normal truncated to [-cut, cut]: sqrt(1 - 2 cut phi(cut) / Z)."""
    phi = math.exp(-0.5 * cut * cut) / math.sqrt(2 * math.pi)
    mass = math.erf(cut / math.sqrt(2))
    return math.sqrt(1 - 2 * cut * phi / mass)


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_trunc_normal_std_and_truncation(kind: str, nonlinearity: str) -> None:
    torch.manual_seed(0)
    layer, fan_in, _ = _make_layer(kind)
    initialize_weights(layer, "trunc_normal", nonlinearity)
    w = layer.weight.detach()
    sigma = GAINS[nonlinearity] / math.sqrt(fan_in)
    assert w.abs().max().item() <= 2 * sigma * (1 + 1e-6)
    # The cut is at 2 sigma, not further in: values get close to it.
    assert w.abs().max().item() > 1.95 * sigma
    _assert_rel(w.std().item(), sigma * _truncated_std_factor(2.0), 0.03)
    _assert_centered(w, sigma)


def test_truncated_std_factor_matches_the_known_value() -> None:
    # Guards the helper above: the std of N(0,1) cut at +-2 is 0.8796 (standard tables).
    assert _truncated_std_factor(2.0) == pytest.approx(0.8796, abs=1e-4)


@pytest.mark.parametrize("scheme", [s for s in INIT_SCHEMES if s != "default"])
def test_biases_zero_and_batchnorm_reset(scheme: str) -> None:
    torch.manual_seed(0)
    model = build_model("resnet", width=4)
    mlp = build_model("mlp", width=16)
    with torch.no_grad():
        for module in (*model.modules(), *mlp.modules()):
            if isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(3.0)
                module.bias.fill_(-1.0)
    initialize_weights(model, scheme)
    initialize_weights(mlp, scheme)
    biases = 0
    for module in (*model.modules(), *mlp.modules()):
        if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
            assert torch.count_nonzero(module.bias) == 0
            biases += 1
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    assert biases >= 4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_leaves_pytorch_init_untouched(name: str) -> None:
    torch.manual_seed(1234)
    fresh = build_model(name)
    torch.manual_seed(1234)
    initialized = initialize_weights(build_model(name), "default")
    for (key, a), b in zip(
        fresh.state_dict().items(), initialized.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), key


@pytest.mark.parametrize("scheme", [s for s in INIT_SCHEMES if s != "default"])
def test_every_other_scheme_changes_every_weight(scheme: str) -> None:
    torch.manual_seed(1234)
    fresh = build_model("cnn_bn", width=8)
    torch.manual_seed(1234)
    initialized = initialize_weights(build_model("cnn_bn", width=8), scheme)
    before = dict(fresh.named_parameters())
    for key, param in initialized.named_parameters():
        if key.endswith("weight") and param.dim() > 1:
            assert not torch.equal(param, before[key]), key


@pytest.mark.parametrize("scheme", [s for s in INIT_SCHEMES if s != "default"])
def test_weights_are_a_function_of_the_seed(scheme: str) -> None:
    def make(seed: int) -> nn.Module:
        # Construction draws from the RNG too; seeding after it isolates the init's own draws.
        model = build_model("tutorial_cnn", width=8)
        torch.manual_seed(seed)
        return initialize_weights(model, scheme)

    a, b, c = make(7), make(7), make(8)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_every_model_runs_after_every_scheme(name: str, scheme: str) -> None:
    torch.manual_seed(0)
    model = initialize_weights(build_model(name, width=8), scheme).eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()


def test_initialize_weights_returns_the_same_module() -> None:
    model = build_model("mlp", width=8)
    assert initialize_weights(model, "xavier_uniform") is model


def test_unknown_scheme_names_allowed_values() -> None:
    with pytest.raises(ValueError) as excinfo:
        initialize_weights(nn.Linear(2, 2), "he_normal")
    message = str(excinfo.value)
    assert "he_normal" in message
    for scheme in INIT_SCHEMES:
        assert scheme in message


def test_scheme_tuple_is_the_documented_one() -> None:
    assert INIT_SCHEMES == (
        "default",
        "xavier_uniform",
        "xavier_normal",
        "kaiming_uniform",
        "kaiming_normal",
        "orthogonal",
        "trunc_normal",
    )


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_unknown_nonlinearity_is_rejected(scheme: str) -> None:
    with pytest.raises(ValueError, match="swish"):
        initialize_weights(nn.Linear(2, 2), scheme, nonlinearity="swish")
