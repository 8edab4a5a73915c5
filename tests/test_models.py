"""Shape, structure and gradient checks for every registered model, on random CPU tensors."""

import math

import pytest
import torch
from torch import nn

from models import INIT_SCHEMES, MODELS, build_model, head, initialize_weights
from models.layers import LearnedTemperature
from models.tutorial_cnn import TutorialCNN

NAMES = sorted(MODELS)


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_the_documented_names() -> None:
    assert set(MODELS) == {"tutorial_cnn", "mlp", "cnn_bn", "resnet", "stem_cnn"}


@pytest.mark.parametrize("name", NAMES)
def test_logits_shape_contiguous_and_channels_last(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(3, 1, 28, 28)
    x_cl = x.to(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x)
        out_cl = model(x_cl)
        out_cl_model = model.to(memory_format=torch.channels_last)(x_cl)
    for logits in (out, out_cl, out_cl_model):
        assert logits.shape == (3, 10)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()
    # Memory format is a layout choice; it must not change what the model computes.
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_cl_model, out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_width_and_num_classes_are_honoured(name: str) -> None:
    default = build_model(name)
    narrow = build_model(name, width=8, num_classes=7)
    assert _count_params(narrow) < _count_params(default)
    assert narrow(torch.randn(2, 1, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize("name", NAMES)
def test_width_zero_means_the_class_default(name: str) -> None:
    torch.manual_seed(0)
    via_registry = build_model(name, width=0)
    torch.manual_seed(0)
    direct = MODELS[name]()
    assert _count_params(via_registry) == _count_params(direct)


@pytest.mark.parametrize("name", NAMES)
def test_negative_width_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="width"):
        build_model(name, width=-1)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).train()
    x = torch.randn(3, 1, 28, 28).to(memory_format=torch.channels_last)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 4, 9]))
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


def test_unknown_model_name_lists_allowed_names_sorted() -> None:
    with pytest.raises(ValueError) as excinfo:
        build_model("vgg99")
    message = str(excinfo.value)
    assert "vgg99" in message
    assert "cnn_bn, mlp, resnet, stem_cnn, tutorial_cnn" in message


def test_tutorial_cnn_has_the_tutorial_parameter_count() -> None:
    assert _count_params(TutorialCNN()) == 582_026
    assert _count_params(build_model("tutorial_cnn")) == 582_026


def test_tutorial_cnn_matches_the_tutorial_layer_for_layer() -> None:
    # (type, attributes that define the layer), in forward order, as in the seed tutorial.
    expected = [
        (nn.Conv2d, {"in_channels": 1, "out_channels": 32, "kernel_size": (5, 5)}),
        (nn.ReLU, {}),
        (nn.MaxPool2d, {"kernel_size": 2}),
        (nn.Dropout, {"p": 0.3}),
        (nn.Conv2d, {"in_channels": 32, "out_channels": 64, "kernel_size": (5, 5)}),
        (nn.ReLU, {}),
        (nn.MaxPool2d, {"kernel_size": 2}),
        (nn.Dropout, {"p": 0.3}),
        (nn.Flatten, {}),
        (nn.Linear, {"in_features": 1024, "out_features": 512}),
        (nn.ReLU, {}),
        (nn.Linear, {"in_features": 512, "out_features": 10}),
    ]
    leaves = [m for m in TutorialCNN().modules() if not list(m.children())]
    assert len(leaves) == len(expected)
    for layer, (layer_type, attributes) in zip(leaves, expected, strict=True):
        assert type(layer) is layer_type
        for attribute, value in attributes.items():
            assert getattr(layer, attribute) == value, (layer, attribute)
    for conv in (leaves[0], leaves[4]):
        assert conv.stride == (1, 1) and conv.padding == (0, 0) and conv.bias is not None


def test_tutorial_cnn_width_scales_every_layer() -> None:
    layers = [m for m in TutorialCNN(width=8).modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    shapes = [tuple(m.weight.shape) for m in layers]
    assert shapes == [(8, 1, 5, 5), (16, 8, 5, 5), (128, 256), (10, 128)]


# --- the classifier head and our own layer ------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_model_names_its_last_linear_layer_as_its_head(name: str) -> None:
    model = build_model(name, width=4, num_classes=7)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert head(model) is linears[-1]
    assert head(model).out_features == 7


def test_a_model_that_names_no_head_is_an_error() -> None:
    with pytest.raises(ValueError, match="Sequential does not name its classifier head"):
        head(nn.Sequential(nn.Linear(2, 2)))


def test_learned_temperature_starts_neutral_and_learns() -> None:
    layer = LearnedTemperature()
    logits = torch.randn(4, 10)
    assert torch.equal(layer(logits), logits)  # T = 1 changes nothing
    nn.functional.cross_entropy(layer(logits), torch.tensor([0, 1, 2, 3])).backward()
    assert layer.log_temperature.grad is not None
    assert layer.log_temperature.grad.abs().item() > 0
    with torch.no_grad():
        layer.log_temperature.fill_(math.log(2.0))
    torch.testing.assert_close(layer(logits), logits / 2)
    assert layer.temperature == pytest.approx(2.0)


def test_resnet_learns_its_temperature_and_every_init_scheme_resets_it() -> None:
    model = build_model("resnet", width=4)
    assert isinstance(model.temperature, LearnedTemperature)
    x = torch.randn(3, 1, 28, 28)
    nn.functional.cross_entropy(model(x), torch.tensor([0, 4, 9])).backward()
    assert model.temperature.log_temperature.grad.abs().item() > 0
    for scheme in [s for s in INIT_SCHEMES if s != "default"]:
        with torch.no_grad():
            model.temperature.log_temperature.fill_(0.7)
        initialize_weights(model, scheme)
        assert model.temperature.log_temperature.item() == 0.0, scheme
