"""The FashionMNIST dataset: class names, normalization constants, and loading all of it."""

from dataclasses import dataclass
from pathlib import Path

import torch

from data_utils.idx import FILES, read_idx
from data_utils.locate import find_data_dir

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Mean and standard deviation of the training images' pixels, scaled to [0, 1].
MEAN = 0.2860
STD = 0.3530


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Float32 images standardized with MEAN and STD, from uint8 pixels (or floats on 0..255)."""
    # copy=True so that the in-place steps never write into a float input.
    return images.to(torch.float32, copy=True).div_(255).sub_(MEAN).div_(STD)


@dataclass(frozen=True)
class FashionMNIST:
    """All of FashionMNIST as tensors: uint8 images [N, 28, 28] and int64 labels [N]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    md5: str
    root: Path


def load_fashion_mnist(data_dir: str | Path | None = None) -> FashionMNIST:
    """Find FashionMNIST (see `find_data_dir`), verify the checksums of its four files, load it."""
    root = find_data_dir(data_dir)
    arrays = {
        role: torch.from_numpy(read_idx(root / f.name, f.md5, f.raw_md5))
        for role, f in FILES.items()
    }
    return FashionMNIST(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].long(),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].long(),
        # The checksum of the decompressed training images: every verified copy has it, whether
        # it came from Zalando, torchvision or Debian, so runs on the same data share the tag.
        md5=FILES["train_images"].raw_md5,
        root=root,
    )
