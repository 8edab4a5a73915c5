"""Loader throughput: images/s delivered as normalized float batches of 256, no model.

Ours: `DeviceLoader` over the training images as the engine builds it (shuffled, normalized,
channels_last), once without and once with the crop-and-flip augmentation. Baseline: the
tutorial's `DataLoader` with its 4 workers over the CSV dataset, one full epoch per measurement
(its workers start again each epoch, as they do in the tutorial), with the normalization the
tutorial leaves out applied per batch so both deliver the same thing.

One of our epochs takes a few hundredths of a second, too short to time alone: a timing that
short swings with every page fault and allocator whim. So each measurement is as many whole
epochs as fill at least half a second (counted once, from an untimed epoch of each variant
before the warmup), and the row shows the spread of the measurements beside their median.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import torch

from benchmarks import tutorial_baseline as tb
from benchmarks.measure import ratio, rounds, summary, sync
from benchmarks.publish import Row, fmt, parse, parser, publish, result_name
from data_utils import MEAN, STD, DeviceLoader
from experiments.engine import dataset

TARGET = 100.0
SMOKE_IMAGES = 1024
MIN_MEASUREMENT_S = 0.5


# A variant: epochs -> images/s over that many epochs back to back.
Passes = Callable[[int], float]


def ours(images: torch.Tensor, labels: torch.Tensor, device: str, augment: bool) -> Passes:
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

    def passes(epochs: int) -> float:
        t0, n = time.perf_counter(), 0
        for _ in range(epochs):
            for x, _ in loader:
                n += len(x)
        sync(device)
        return n / (time.perf_counter() - t0)

    return passes


def baseline(max_images: int | None, device: str) -> Passes:
    train_csv, _ = tb.make_csvs(train_rows=max_images, test_rows=max_images)
    loader = tb.tutorial_loader(tb.TutorialDataset(train_csv))

    def passes(epochs: int) -> float:
        t0, n = time.perf_counter(), 0
        for _ in range(epochs):
            for x, _ in loader:
                x = ((x - MEAN) / STD).to(device)
                n += len(x)
        sync(device)
        return n / (time.perf_counter() - t0)

    return passes


def epochs_per_measurement(passes: Passes, images: int, min_s: float) -> int:
    """Whole epochs that take at least min_s, from one untimed epoch."""
    epoch_s = images / passes(1)
    return max(1, math.ceil(min_s / epoch_s))


def spread(s: dict[str, float]) -> str:
    return (
        f"median of {s['n']} (min {fmt(s['min'])}, quartiles {fmt(s['q1'])}–{fmt(s['q3'])}, "
        f"max {fmt(s['max'])})"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(parser("bench_loader", __doc__.split("\n\n")[0], repeats=15), argv)
    n = SMOKE_IMAGES if args.smoke else None
    data = dataset("")
    images, labels = data.train_images[:n], data.train_labels[:n]
    variants = {
        "ours": ours(images, labels, args.device, augment=False),
        "ours_augment": ours(images, labels, args.device, augment=True),
        "tutorial": baseline(n, args.device),
    }
    min_s = 0.0 if args.smoke else MIN_MEASUREMENT_S
    epochs = {k: epochs_per_measurement(v, len(images), min_s) for k, v in variants.items()}
    runs = rounds(
        {k: lambda v=v, e=epochs[k]: v(e) for k, v in variants.items()},
        args.repeats,
        args.warmup,
    )
    s = {k: summary(v) for k, v in runs.items()}
    med = {k: v["median"] for k, v in s.items()}
    plain = ratio(med["ours"], med["tutorial"])
    rows = [
        Row(
            f"images/s, no augmentation: {spread(s['ours'])}",
            med["ours"],
            med["tutorial"],
            "img/s",
            plain,
            f"≥ {TARGET:g}×",
            plain is not None and plain >= TARGET,
        ),
        Row(
            "images/s, with crop+flip augmentation (the tutorial has none): "
            + spread(s["ours_augment"]),
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
        f"{args.repeats} measurements per variant, after {args.warmup} discarded warmup "
        "round(s), variants alternating; each measurement is "
        + ", ".join(f"{k} {e} epoch(s)" for k, e in epochs.items())
        + f" back to back (at least {min_s:g} s). Tutorial: "
        + spread(s["tutorial"])
        + ".",
    ]
    publish(
        args,
        result_name("loader", args.device),
        "Loader throughput, normalized batches of 256",
        rows,
        {"images": len(images), "epochs_per_measurement": epochs, **s},
        notes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
