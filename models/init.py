"""Weight-initialization schemes, applied to an already constructed model."""

import math

from torch import Tensor, nn

from models.layers import LearnedTemperature

INIT_SCHEMES: tuple[str, ...] = (
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "trunc_normal",
)

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Our own layers (models/layers.py): each resets to the value at which it changes nothing.
_OURS = (LearnedTemperature,)


def _fan_in(weight: Tensor) -> int:
    # Linear is [out, in]; ConvNd is [out, in / groups, *kernel]: inputs feeding one output unit.
    return math.prod(weight.shape[1:])


def _init_weight(weight: Tensor, scheme: str, gain: float) -> None:
    if scheme == "xavier_uniform":
        nn.init.xavier_uniform_(weight, gain=gain)
    elif scheme == "xavier_normal":
        nn.init.xavier_normal_(weight, gain=gain)
    elif scheme == "kaiming_uniform":
        # Written out rather than nn.init.kaiming_uniform_, whose leaky_relu gain uses a=0
        # instead of calculate_gain's 0.01 slope; this keeps one source of truth for the gain.
        bound = gain * math.sqrt(3.0 / _fan_in(weight))
        nn.init.uniform_(weight, -bound, bound)
    elif scheme == "kaiming_normal":
        nn.init.normal_(weight, 0.0, gain / math.sqrt(_fan_in(weight)))
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight, gain=gain)
    elif scheme == "trunc_normal":
        std = gain / math.sqrt(_fan_in(weight))
        nn.init.trunc_normal_(weight, 0.0, std, a=-2.0 * std, b=2.0 * std)


def initialize_weights(model: nn.Module, scheme: str, nonlinearity: str = "relu") -> nn.Module:
    """Re-initialize ``model`` in place with ``scheme`` and return it.

    Every Linear/Conv weight gets the scheme with gain ``nn.init.calculate_gain(nonlinearity)``
    (kaiming_* and trunc_normal use fan_in; trunc_normal cuts at +-2 std, so its realized std is
    about 0.88x the nominal one), their biases become zero, BatchNorm resets to weight 1, bias 0,
    and our own layers (models/layers.py) to their neutral values, which they are also built
    with. ``"default"`` leaves the model exactly as PyTorch initialized it. Modules are visited
    in ``model.modules()`` order, so the result is a function of torch's global seed.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; allowed: {', '.join(INIT_SCHEMES)}")
    # Validated even for "default" so a typo fails the same way whatever the scheme.
    gain = nn.init.calculate_gain(nonlinearity)
    if scheme == "default":
        return model
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            _init_weight(module.weight, scheme, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _NORMS) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, _OURS):
            module.reset_parameters()
    return model
