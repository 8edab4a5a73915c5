"""Loader throughput: images/s delivered as normalized float batches of 256, no model.

Ours: `DeviceLoader` over the training images as the engine builds it (shuffled, normalized,
channels_last), without and with the crop-and-flip augmentation. Baseline: the tutorial's
`DataLoader` with its 4 workers over the CSV dataset, one full epoch per measurement (its workers
start again each epoch, as in the tutorial), normalized per batch so both deliver the same thing.

One of our epochs takes a few hundredths of a second, too short to time alone, so each
measurement is as many whole epochs as fill half a second (counted from an untimed epoch).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable

import torch

from benchmarks import tutorial_baseline as tb
from benchmarks.publish import parse, parser, publish, result_name, rounds, sync
from data_utils import MEAN, STD, DeviceLoader
from experiments.engine import dataset

SMOKE_IMAGES = 1024
MIN_MEASUREMENT_S = 0.5
# A variant: (epochs, seed) -> images/s over that many epochs back to back.
Passes = Callable[[int, int], float]


def rate(batches: Callable[[], Iterable[torch.Tensor]], epochs: int, device: str) -> float:
    """Images/s of `epochs` passes over the batches that batches() yields, back to back."""
    t0, n = time.perf_counter(), 0
    for _ in range(epochs):
        n += sum(len(x) for x in batches())
    sync(device)
    return n / (time.perf_counter() - t0)


def ours(images: torch.Tensor, labels: torch.Tensor, device: str, augment: bool) -> Passes:
    def passes(epochs: int, seed: int) -> float:
        opts = {"augment": augment, "drop_last": True, "seed": seed, "channels_last": True}
        loader = DeviceLoader(images, labels, tb.BATCH_SIZE, device=device, **opts)
        return rate(lambda: (x for x, _ in loader), epochs, device)

    return passes


def tutorial(max_images: int | None, device: str) -> Passes:
    train_csv, _ = tb.make_csvs(train_rows=max_images, test_rows=max_images)
    loader = tb.tutorial_loader(tb.TutorialDataset(train_csv))

    def passes(epochs: int, seed: int) -> float:
        torch.manual_seed(seed)  # the DataLoader's shuffle
        return rate(lambda: (((x - MEAN) / STD).to(device) for x, _ in loader), epochs, device)

    return passes


def main(argv: list[str] | None = None) -> int:
    args = parse(parser("bench_loader", __doc__.split("\n\n")[0], repeats=15), argv)
    n = SMOKE_IMAGES if args.smoke else None
    data = dataset("")
    images, labels = data.train_images[:n], data.train_labels[:n]
    variants = {
        "ours": ours(images, labels, args.device, augment=False),
        "ours_augment": ours(images, labels, args.device, augment=True),
        "tutorial": tutorial(n, args.device),
    }
    min_s = 0.0 if args.smoke else MIN_MEASUREMENT_S
    epochs = {k: max(1, math.ceil(min_s * v(1, 0) / len(images))) for k, v in variants.items()}
    runs = rounds(
        {k: lambda seed, v=v, e=epochs[k]: v(e, seed) for k, v in variants.items()},
        args.repeats,
        args.warmup,
    )
    samples = {"images": len(images), "epochs_per_measurement": epochs, **runs}
    samples["seed"] = list(range(args.repeats))
    publish(args, result_name("loader", args.device), "loader", samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
