"""The fast batch loader: the whole split held as uint8 on the training device."""

from collections.abc import Iterator

import numpy as np
import torch

from data_utils.augment import random_crop_flip
from data_utils.fashion import normalize


class DeviceLoader:
    """Batches (x float32 [B, 1, 28, 28], y int64 [B]) cut from tensors kept on `device`.

    Shuffling, augmentation and normalization run per batch on the device; there are no worker
    processes and no per-sample Python. An epoch's order and augmentation are a pure function of
    (seed, epoch): `set_epoch` picks the epoch of the next iteration, and without it each
    iteration moves on to the next epoch, so a resumed run that calls `set_epoch` sees the same
    batches as an uninterrupted one.

    `index` picks the rows this loader serves (default: all of them): a split shares the
    dataset's tensors, where `images[index]` would copy them (55k images: 43 MB).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        index: torch.Tensor | None = None,
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        augment: bool = False,
        pad: int = 2,
        drop_last: bool = False,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError(
                f"images must be uint8 [N, H, W], got {images.dtype} {list(images.shape)}"
            )
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if index is not None:
            _check_index(index, len(images))
        self.device = torch.device(device)
        self.images = images.to(self.device).unsqueeze(1)
        self.labels = labels.to(self.device, torch.int64)
        self.index = None if index is None else index.to(self.device, torch.int64)
        self.size = len(images) if index is None else len(index)  # the rows served
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.pad = pad
        self.drop_last = drop_last
        self.seed = seed
        self.channels_last = channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration the one of `epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(self.device).manual_seed(_epoch_seed(self.seed, self.epoch))
        self.epoch += 1
        return self._batches(generator)

    def _batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.size
        if self.shuffle:
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        if self.index is not None:
            order = self.index[order]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images.index_select(0, idx)
            if self.augment:
                x = random_crop_flip(x, self.pad, flip=True, generator=generator)
            x = normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)


def _check_index(index: torch.Tensor, n: int) -> None:
    in_range = len(index) == 0 or (int(index.min()) >= 0 and int(index.max()) < n)
    if index.ndim != 1 or index.dtype not in (torch.int32, torch.int64) or not in_range:
        raise ValueError(
            f"index must be 1-D integer row numbers in [0, {n}), got {index.dtype} "
            f"{list(index.shape)}"
        )


def _epoch_seed(seed: int, epoch: int) -> int:
    # SeedSequence mixes the pair, so neighbouring (seed, epoch) pairs give unrelated streams
    # rather than, say, seed 1 epoch 0 repeating seed 0 epoch 1.
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])
