"""The teaching-grade `torch.utils.data.Dataset`: one normalized image per call."""

import torch
from torch.utils.data import Dataset

from data_utils.fashion import normalize


class FashionDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images uint8 [N, 28, 28] and labels int64 [N], served as (float32 [1, 28, 28], int).

    The images are normalized exactly as `DeviceLoader` normalizes them, so both give the same
    samples.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return normalize(self.images[i].unsqueeze(0)), int(self.labels[i])
