"""A BatchNorm CNN that reads the 28x28 image once, with a stride-2 first convolution."""

from typing import ClassVar

from torch import Tensor, nn

from models.cnn_bn import conv_bn_relu


class StemCNN(nn.Module):
    """[2w stride 2, 2w] pool, [4w, 4w] pool, flatten, linear.

    The stride-2 stem puts every layer after it at 14x14 or 7x7, where cnn_bn runs two of its
    five at 28x28. It trains an epoch in fp32 in about two thirds of cnn_bn's time on a 2-core
    CPU, for
    less accuracy in long runs (benchmarks/RESULTS.md, the experiments log). It is the model
    for short runs: ``experiments/configs/speedrun.yaml``.
    """

    HEAD: ClassVar[str] = "classifier.1"

    def __init__(self, *, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.features = nn.Sequential(
            conv_bn_relu(1, 2 * width, stride=2),
            conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * width, 4 * width),
            conv_bn_relu(4 * width, 4 * width),
            nn.MaxPool2d(2),
        )
        # 28 -stride 2-> 14 -pool-> 7 -pool-> 3 (floor): the head sees a 4w x 3 x 3 grid.
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * 3 * 3, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
