"""A run's data: the train, val and test loaders cut from the dataset, and what each holds as
the callbacks record it (files, MD5s, the selection, the size)."""

from __future__ import annotations

import torch

from data_utils import FILES, DeviceLoader, FashionMNIST, train_val_split
from experiments.callbacks import DataSplit
from experiments.config import Config

# Small eval batches keep the activations, and so the peak RSS, down: 160 MiB less than 1000
# on a 2-core CPU, and no slower.
EVAL_BATCH = 256
# The val split is the same for every run whatever its seed, so val accuracies compare.
SPLIT_SEED = 0


def loaders(
    cfg: Config, data: FashionMNIST, device: torch.device
) -> tuple[DeviceLoader, DeviceLoader | None, DeviceLoader]:
    train_idx, val_idx = (
        train_val_split(len(data.train_labels), cfg.val_size, SPLIT_SEED)
        if cfg.val_size
        else (torch.arange(len(data.train_labels)), None)
    )
    if cfg.train_subset:
        train_idx = train_idx[: cfg.train_subset]
    fast = {"device": device, "channels_last": True}
    # On the device once, for both splits to index into (on the CPU, no copy at all).
    images, labels = data.train_images.to(device), data.train_labels.to(device, torch.int64)
    train = DeviceLoader(
        images,
        labels,
        cfg.batch_size,
        index=train_idx,
        shuffle=True,
        augment=cfg.augment,
        pad=cfg.pad,
        seed=cfg.seed,
        **fast,
    )
    val = None
    if val_idx is not None:
        val = DeviceLoader(
            images,
            labels,
            EVAL_BATCH,
            index=val_idx,
            shuffle=False,
            **fast,
        )
    test = DeviceLoader(data.test_images, data.test_labels, EVAL_BATCH, shuffle=False, **fast)
    return train, val, test


def data_splits(
    cfg: Config,
    data: FashionMNIST,
    train: DeviceLoader,
    val: DeviceLoader | None,
    test: DeviceLoader,
) -> list[DataSplit]:
    """What each loader holds, as the callbacks record it: files, MD5s, selection, size."""

    def split(role: str, file: str, loader: DeviceLoader, selection: dict[str, int]) -> DataSplit:
        idx = [FILES[f"{file}_images"], FILES[f"{file}_labels"]]
        paths = tuple(data.root / f.name for f in idx)
        return DataSplit(role, paths, tuple(f.raw_md5 for f in idx), selection, loader.size)

    held_out = {"split_seed": SPLIT_SEED, "val_size": cfg.val_size}
    splits = [split("train", "train", train, {**held_out, "train_subset": cfg.train_subset})]
    if val is not None:
        splits.append(split("val", "train", val, held_out))
    return [*splits, split("test", "test", test, {})]
