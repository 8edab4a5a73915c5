"""FashionMNIST classifiers, a name -> class registry, and weight-initialization schemes."""

from models.init import INIT_SCHEMES, initialize_weights
from models.registry import MODELS, build_model, head

__all__ = ["INIT_SCHEMES", "MODELS", "build_model", "head", "initialize_weights"]
