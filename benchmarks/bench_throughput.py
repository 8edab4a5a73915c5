"""Training throughput: images/s at batch 256, Adam at 1e-3, our engine's loop vs the tutorial's.

Ours: the engine's own epoch loop (`experiments.engine.train_epoch`) on a model built by
`experiments.engine.build_training` with channels_last, fed by `DeviceLoader`, with the settings
of `experiments/configs/tutorial.yaml`, in the precision `precision: auto` picks. Baseline: the
tutorial's epoch over its CSV dataset and 4-worker `DataLoader`, `.item()` every step included.
Both see the same images per measurement (a full epoch of 60k), each round its own seed.

Ablations, ours only, on 100 steps: bf16 vs fp32, and in the precision picked, channels_last vs
contiguous.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable

import torch

from benchmarks import ROOT
from benchmarks import tutorial_baseline as tb
from benchmarks.publish import parse, parser, publish, result_name, rounds, sync
from data_utils import DeviceLoader, FashionMNIST
from experiments.config import Config, load_config, validate
from experiments.engine import build_training, dataset, train_epoch
from experiments.precision import resolve_precision
from models.losses import build_loss

FULL_IMAGES, SMOKE_IMAGES = 60000, 512
ABLATION_STEPS, SMOKE_ABLATION_STEPS = 100, 1


def engine(
    cfg: Config, data: FashionMNIST, steps: int, channels_last: bool
) -> Callable[[int], float]:
    """One measurement: our loop over `steps` batches, as images/s, in cfg's precision."""
    device = torch.device(cfg.device)
    n = steps * cfg.batch_size
    loss_fn = build_loss(cfg.loss, cfg.label_smoothing)

    def run(seed: int) -> float:
        torch.manual_seed(seed)
        model, opt, sched = build_training(cfg, device, steps)
        if not channels_last:
            model.to(memory_format=torch.contiguous_format)  # in place: the optimizer keeps it
        opts = {"augment": cfg.augment, "seed": seed, "channels_last": channels_last}
        images, labels = data.train_images[:n], data.train_labels[:n]
        loader = DeviceLoader(images, labels, cfg.batch_size, device=device, **opts)
        t0 = time.perf_counter()
        _, _, seen = train_epoch(cfg, model, opt, sched, loss_fn, loader, 0, 0, cfg.precision)
        sync(cfg.device)
        return seen / (time.perf_counter() - t0)

    return run


def tutorial(images: int, device: str, model_name: str) -> Callable[[int], float]:
    """One measurement: a full tutorial epoch over `images` CSV rows, as images/s."""
    train_csv, _ = tb.make_csvs(train_rows=images, test_rows=images)
    loader = tb.tutorial_loader(tb.TutorialDataset(train_csv))

    def run(seed: int) -> float:
        torch.manual_seed(seed)
        model = tb.tutorial_model(device, model_name)
        opt = torch.optim.Adam(model.parameters(), lr=tb.LR)
        seen, seconds = tb.train_epoch(model, loader, opt, device)
        sync(device)
        return seen / seconds

    return run


def main(argv: list[str] | None = None) -> int:
    p = parser("bench_throughput", __doc__.split("\n\n")[0], repeats=3)
    p.add_argument("--model", default="tutorial_cnn", help="registry name, for both sides")
    args = parse(p, argv)
    images = SMOKE_IMAGES if args.smoke else FULL_IMAGES
    steps = images // tb.BATCH_SIZE
    short = SMOKE_ABLATION_STEPS if args.smoke else ABLATION_STEPS
    cfg = load_config(
        ROOT / "experiments" / "configs" / "tutorial.yaml",
        {"model": args.model, "device": args.device},
    )
    validate(cfg)
    data = dataset(cfg.data_dir)
    model, _, _ = build_training(cfg, torch.device(args.device), 1)
    loss_fn = build_loss(cfg.loss, cfg.label_smoothing)
    # As a run of the tutorial's length would resolve it.
    precision = resolve_precision(
        cfg.precision, torch.device(args.device), model, loss_fn, cfg.batch_size, cfg.epochs * steps
    )
    ours = dataclasses.replace(cfg, precision=precision)
    variants = {
        "ours": engine(ours, data, steps, True),
        "tutorial": tutorial(images, args.device, args.model),
        "bf16": engine(dataclasses.replace(cfg, precision="bf16"), data, short, True),
        "fp32": engine(dataclasses.replace(cfg, precision="fp32"), data, short, True),
        "channels_last": engine(ours, data, short, True),
        "contiguous": engine(ours, data, short, False),
    }
    samples = {"model": args.model, "device": args.device, "batch_size": cfg.batch_size}
    samples |= {"precision": precision, "threads": torch.get_num_threads(), "steps": steps}
    samples |= {"ablation_steps": short, "seed": list(range(args.repeats))}
    samples |= rounds(variants, args.repeats, args.warmup)
    variant = "" if args.model == "tutorial_cnn" else args.model
    publish(args, result_name("throughput", args.device, variant), "throughput", samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
