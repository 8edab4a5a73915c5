"""A logged model as a service: raw 28x28 pixels in, per image the class name and the ten class
probabilities out. This is the pyfunc side of every model the project logs, so

    mlflow.pyfunc.load_model("models:/fashion-lab@champion").predict(uint8_images)
    mlflow models serve -m models:/fashion-lab@champion --env-manager local

take pixels as they come (uint8, or floats on 0..255; shaped (N, 28, 28), (N, 1, 28, 28) or
(N, 784)), while mlflow.pytorch.load_model still returns the bare network (normalized input,
logits), exported by torch.export as mlflow.pytorch saves it. The normalization and the class
names travel in the model's MLmodel metadata.

This file is copied into each logged model (its code/ folder), so it imports nothing of the
project: a model loads wherever mlflow and torch do. The signature lists the outputs only:
MLflow checks a tensor input's dtype and rank exactly, so no one declared input could admit
every form above; the input example shows raw pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import Model, ModelSignature
from mlflow.models.utils import _save_example
from mlflow.types import ColSpec, Schema


def output_signature(classes: list[str]) -> ModelSignature:
    return ModelSignature(
        outputs=Schema([ColSpec("string", "class"), *(ColSpec("float", c) for c in classes)])
    )


def save_model(
    path: str,
    mlflow_model: Model,
    pytorch_model: torch.nn.Module,
    input_example: np.ndarray,
    signature: ModelSignature,
    **kwargs: Any,
) -> None:
    """Model.log's flavor hook. mlflow.pytorch saves the network first, traced by torch.export
    on a normalized example, with the tensor signature that export needs; then this module
    becomes the pyfunc loader (from the model's code/), with the signature of what it serves
    and raw pixels as the example."""
    meta = mlflow_model.metadata
    normalized = (input_example[:, None] / 255 - meta["mean"]) / meta["std"]
    mlflow.pytorch.save_model(
        pytorch_model,
        path,
        mlflow_model=mlflow_model,
        input_example=normalized.astype(np.float32),
        code_paths=[__file__],
        **kwargs,
    )
    mlflow_model.flavors["python_function"]["loader_module"] = Path(__file__).stem
    mlflow_model.signature = signature
    _save_example(mlflow_model, input_example, path)
    mlflow_model.save(str(Path(path, "MLmodel")))


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> PixelClassifier:
    """pyfunc's loader: data_path is the pytorch flavor's data/ folder inside the model."""
    root = str(Path(data_path).parent)
    meta = Model.load(root).metadata
    net = mlflow.pytorch.load_model(root, map_location="cpu")
    return PixelClassifier(net, meta["classes"], meta["mean"], meta["std"])


class PixelClassifier:
    def __init__(self, net: torch.nn.Module, classes: list[str], mean: float, std: float) -> None:
        self.net, self.classes, self.mean, self.std = net, classes, mean, std

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        x = np.asarray(model_input, dtype=np.float32)
        if x.shape[1:] in ((784,), (1, 28, 28)):
            x = x.reshape(len(x), 28, 28)
        if x.shape[1:] != (28, 28):
            raise ValueError(
                f"expected images of 28x28 raw pixels (0..255), shaped (N, 28, 28), "
                f"(N, 1, 28, 28) or (N, 784); got shape {tuple(np.shape(model_input))}"
            )
        images = (torch.from_numpy(x).unsqueeze(1) / 255 - self.mean) / self.std
        with torch.inference_mode():
            probs = torch.softmax(self.net(images), dim=1).numpy()
        out = pd.DataFrame(probs, columns=self.classes)
        out.insert(0, "class", [self.classes[i] for i in probs.argmax(1)])
        return out
