"""The seed tutorial's pipeline, reproduced as the baseline every benchmark compares against.

CSVs of label plus 784 pixels (written once per machine, before any clock starts), read with
pandas; a `Dataset` that turns each row into a PIL image and back (`ToPILImage`, `Resize(28)`,
`ToTensor`, no normalization); a `DataLoader` with 4 workers; `tutorial_cnn`, cross-entropy, Adam
at 1e-3, batch 256, the test set scored after every epoch. Its inefficiencies are the point.
`python -m benchmarks.tutorial_baseline [--epochs 20] [--until-accuracy 0.91] [--seed 0]` prints
`epoch K/N test_accuracy A ...` after each epoch, which bench_time_to_accuracy times.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import Compose, Resize, ToPILImage, ToTensor

from data_utils import load_fashion_mnist
from models import build_model

# The tutorial's 4 workers are more than this machine's cores; that is the baseline, not a bug.
warnings.filterwarnings("ignore", message="This DataLoader will create")

BATCH_SIZE, NUM_WORKERS, LR = 256, 4, 1e-3
SMOKE_IMAGES = (1024, 512)  # train, test: enough to pass through every line
TRANSFORM = Compose([ToPILImage(), Resize(28), ToTensor()])
CSV_CACHE = Path(tempfile.gettempdir()) / "fashion-lab-tutorial-csv"


def make_csvs(train_rows: int | None = None, test_rows: int | None = None) -> tuple[Path, Path]:
    """The train and test CSVs (the first N rows of each split, default all), written once from
    the checksummed IDX files."""
    CSV_CACHE.mkdir(parents=True, exist_ok=True)
    data, paths = None, []
    for split, rows in (("train", train_rows), ("test", test_rows)):
        path = CSV_CACHE / f"{split}-{rows or 'all'}.csv"
        if not path.exists():
            data = data or load_fashion_mnist(None)
            images = getattr(data, f"{split}_images")[:rows].reshape(-1, 784).numpy()
            frame = pd.DataFrame(images, columns=[f"pixel{i}" for i in range(1, 785)])
            frame.insert(0, "label", getattr(data, f"{split}_labels")[:rows].numpy())
            # Under a temp name, then renamed: a benchmark beside this one never reads half a file.
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            frame.to_csv(tmp, index=False)
            os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]


class TutorialDataset(Dataset):
    """A pandas-read CSV served one row at a time through the PIL round trip."""

    def __init__(self, csv_path: Path, transform: Callable = TRANSFORM) -> None:
        frame = pd.read_csv(csv_path)
        # The tutorial pulls the values out of the DataFrame once; .iloc per row would be slower.
        self.labels = frame["label"].to_numpy()
        self.images = frame.drop(columns="label").to_numpy(dtype=np.uint8)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        return self.transform(self.images[i].reshape(28, 28, 1)), self.labels[i]


def tutorial_loader(dataset: Dataset, train: bool = True) -> DataLoader:
    """The tutorial's loader; the test loader keeps every image and their order."""
    return DataLoader(
        dataset, batch_size=BATCH_SIZE, shuffle=train, num_workers=NUM_WORKERS, drop_last=train
    )


def tutorial_model(device: str | torch.device = "cpu", name: str = "tutorial_cnn") -> nn.Module:
    return build_model(name).to(device)


def train_epoch(
    model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, device: str | torch.device
) -> tuple[int, float]:
    """One tutorial epoch: (images trained on, seconds), DataLoader worker start-up included."""
    model.train()
    t0, seen, running = time.perf_counter(), 0, 0.0
    for x, y in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        loss.backward()
        opt.step()
        running += loss.item()  # the tutorial's per-step host sync, kept on purpose
        seen += len(y)
    return seen, time.perf_counter() - t0


@torch.no_grad()
def test_accuracy(model: nn.Module, loader: DataLoader, device: str | torch.device) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
        total += len(y)
    return correct / total


def command(epochs: int, device: str, smoke: bool, seed: int, *extra: str) -> list[str]:
    """This script's command line, for a run in its own process; writes its CSVs first."""
    images, test_images = SMOKE_IMAGES if smoke else (None, None)
    make_csvs(images, test_images)
    cmd = [sys.executable, "-m", "benchmarks.tutorial_baseline", "--epochs", str(epochs)]
    cmd += ["--device", device, "--seed", str(seed)]
    if smoke:
        cmd += ["--max-images", str(images), "--test-images", str(test_images)]
    return [*cmd, *extra]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tutorial_baseline")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--until-accuracy", type=float, default=None, help="stop at this test accuracy")
    p.add_argument("--max-images", type=int, default=None, help="first N training images only")
    p.add_argument("--test-images", type=int, default=None, help="first N test images only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    train_csv, test_csv = make_csvs(args.max_images, args.test_images)
    train_loader = tutorial_loader(TutorialDataset(train_csv))
    test_loader = tutorial_loader(TutorialDataset(test_csv), train=False)
    model = tutorial_model(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for epoch in range(1, args.epochs + 1):
        train_epoch(model, train_loader, opt, args.device)
        acc = test_accuracy(model, test_loader, args.device)
        elapsed = time.perf_counter() - t0
        line = f"epoch {epoch}/{args.epochs} test_accuracy {acc:.4f} elapsed {elapsed:.1f}s"
        print(line, flush=True)  # timed as it arrives
        if args.until_accuracy is not None and acc >= args.until_accuracy:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
