"""A VGG-style BatchNorm CNN sized to train to >=92% in a few epochs on a laptop CPU."""

from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 same-padding conv, BatchNorm, ReLU.

    The conv has no bias because BatchNorm's shift would cancel it.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CNNBN(nn.Module):
    """[w, w] pool, [2w, 2w] pool, [4w], global average pool, linear.

    Most of the compute sits at 28x28 and 14x14 where the channel count is still small, so at the
    default ``width=32`` a forward pass costs about 22 M multiply-adds per image.
    """

    def __init__(self, *, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.features = nn.Sequential(
            conv_bn_relu(1, width),
            conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            conv_bn_relu(width, 2 * width),
            conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * width, 4 * width),
        )
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
