"""A fully connected baseline: what the convolutional models have to beat."""

from typing import ClassVar

from torch import Tensor, nn


class MLP(nn.Module):
    """Flatten, then two hidden ReLU layers of ``width`` units with dropout, then logits."""

    HEAD: ClassVar[str] = "layers.7"

    def __init__(self, *, num_classes: int = 10, width: int = 512) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, width),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
