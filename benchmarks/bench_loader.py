"""Loader throughput: images/s delivered as normalized float batches of 256, no model.

Ours: `DeviceLoader` over the training images as the engine builds it (shuffled, normalized,
channels_last), once without and once with the crop-and-flip augmentation. Baseline: the
tutorial's `DataLoader` with its 4 workers over the CSV dataset, one full epoch per measurement
(its workers start again each epoch, as they do in the tutorial), with the normalization the
tutorial leaves out applied per batch so both deliver the same thing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch

from benchmarks import tutorial_baseline as tb
from benchmarks.measure import ratio, rounds, summary, sync
from benchmarks.publish import Row, parse, parser, publish, result_name
from data_utils import MEAN, STD, DeviceLoader
from experiments.engine import dataset

TARGET = 100.0
SMOKE_IMAGES = 1024


def ours(
    images: torch.Tensor, labels: torch.Tensor, device: str, augment: bool
) -> Callable[[], float]:
    loader = DeviceLoader(
        images,
        labels,
        tb.BATCH_SIZE,
        device=device,
        shuffle=True,
        augment=augment,
        drop_last=True,
        channels_last=True,
    )

    def epoch() -> float:
        t0, n = time.perf_counter(), 0
        for x, _ in loader:
            n += len(x)
        sync(device)
        return n / (time.perf_counter() - t0)

    return epoch


def baseline(max_images: int | None, device: str) -> Callable[[], float]:
    train_csv, _ = tb.make_csvs(train_rows=max_images, test_rows=max_images)
    loader = tb.tutorial_loader(tb.TutorialDataset(train_csv))

    def epoch() -> float:
        t0, n = time.perf_counter(), 0
        for x, _ in loader:
            x = ((x - MEAN) / STD).to(device)
            n += len(x)
        sync(device)
        return n / (time.perf_counter() - t0)

    return epoch


def main(argv: list[str] | None = None) -> int:
    args = parse(parser("bench_loader", __doc__.split("\n\n")[0], repeats=5), argv)
    n = SMOKE_IMAGES if args.smoke else None
    data = dataset("")
    images, labels = data.train_images[:n], data.train_labels[:n]
    runs = rounds(
        {
            "ours": ours(images, labels, args.device, augment=False),
            "ours_augment": ours(images, labels, args.device, augment=True),
            "tutorial": baseline(n, args.device),
        },
        args.repeats,
        args.warmup,
    )
    s = {k: summary(v) for k, v in runs.items()}
    med = {k: v["median"] for k, v in s.items()}
    plain = ratio(med["ours"], med["tutorial"])
    rows = [
        Row(
            "images/s, no augmentation",
            med["ours"],
            med["tutorial"],
            "img/s",
            plain,
            f"≥ {TARGET:g}×",
            plain is not None and plain >= TARGET,
        ),
        Row(
            "images/s, with crop+flip augmentation (the tutorial has none)",
            med["ours_augment"],
            med["tutorial"],
            "img/s",
            ratio(med["ours_augment"], med["tutorial"]),
        ),
    ]
    notes = [
        f"{len(images):,} training images per epoch, batch {tb.BATCH_SIZE}, drop_last; "
        f"tutorial DataLoader with {tb.NUM_WORKERS} workers, restarted each epoch as in the "
        "tutorial. CSV reading and our one-off copy to the device are outside the clock; the "
        "tutorial's batches are copied to the device inside it.",
        f"Median of {args.repeats} epochs per variant, after {args.warmup} discarded warmup "
        "epoch(s), variants alternating.",
    ]
    publish(
        args,
        result_name("loader", args.device),
        "Loader throughput, normalized batches of 256",
        rows,
        {"images": len(images), **s},
        notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
