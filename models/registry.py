"""Name -> model class, so configs and the CLI can pick a model by a plain string."""

from torch import nn

from models.cnn_bn import CNNBN
from models.mlp import MLP
from models.resnet import ResNet
from models.stem_cnn import StemCNN
from models.tutorial_cnn import TutorialCNN

MODELS: dict[str, type[nn.Module]] = {
    "tutorial_cnn": TutorialCNN,
    "mlp": MLP,
    "cnn_bn": CNNBN,
    "resnet": ResNet,
    "stem_cnn": StemCNN,
}


def build_model(name: str, width: int = 0, num_classes: int = 10) -> nn.Module:
    """Instantiate the model registered as ``name``.

    ``width=0`` means the model's own default width, so a config need not know each default.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    if width < 0:
        raise ValueError(f"width must be >= 0 (0 means the model's default), got {width}")
    if width == 0:
        return MODELS[name](num_classes=num_classes)
    return MODELS[name](num_classes=num_classes, width=width)


def head(model: nn.Module) -> nn.Module:
    """The model's final classifier layer, the one producing the logits: each model names it
    in a ``HEAD`` class attribute (a submodule path), for per-layer optimizer settings."""
    path = getattr(type(model), "HEAD", None)
    if path is None:
        raise ValueError(
            f"{type(model).__name__} does not name its classifier head (a HEAD class attribute "
            "holding the submodule path of its final layer)"
        )
    return model.get_submodule(path)
