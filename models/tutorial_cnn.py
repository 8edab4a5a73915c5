"""The seed tutorial's CNN, reproduced layer for layer so its results stay comparable."""

from typing import ClassVar

from torch import Tensor, nn


class TutorialCNN(nn.Module):
    """Two 5x5 conv/pool/dropout stages and a two-layer classifier head.

    At the default ``width=32`` this is exactly the tutorial network (582,026 parameters):
    Conv2d(1,32,5), ReLU, MaxPool2d(2), Dropout(0.3), Conv2d(32,64,5), ReLU, MaxPool2d(2),
    Dropout(0.3), Flatten, Linear(1024,512), ReLU, Linear(512,10). ``width`` scales conv1's
    channels; conv2 has ``2 * width`` and the hidden layer ``16 * width`` units.
    """

    HEAD: ClassVar[str] = "layers.11"

    def __init__(self, *, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4, so the flattened size is 2w * 4 * 4.
        self.layers = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.3),
            nn.Conv2d(width, 2 * width, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.3),
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, 16 * width),
            nn.ReLU(),
            nn.Linear(16 * width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
