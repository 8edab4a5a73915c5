"""A small ResNet for 28x28 inputs: three stages of one BasicBlock each."""

from typing import ClassVar

from torch import Tensor, nn

from models.layers import LearnedTemperature


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut: identity, or 1x1 conv-BN when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv3x3 (w), BasicBlocks of widths w, 2w, 4w at strides 1, 2, 2, avg pool, linear,
    then a learned softmax temperature (models/layers.py).

    Spatial sizes are 28 -> 28 -> 14 -> 7; the stem keeps full resolution because 28x28 images
    are too small to afford the ImageNet stem's 4x downsampling.
    """

    HEAD: ClassVar[str] = "head.2"

    def __init__(self, *, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.Sequential(
            BasicBlock(width, width, stride=1),
            BasicBlock(width, 2 * width, stride=2),
            BasicBlock(2 * width, 4 * width, stride=2),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, num_classes),
        )
        self.temperature = LearnedTemperature()

    def forward(self, x: Tensor) -> Tensor:
        return self.temperature(self.head(self.stages(self.stem(x))))
