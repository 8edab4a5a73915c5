"""The seed tutorial's pipeline, reproduced as the baseline every benchmark compares against.

CSV files of label plus 784 pixels, read with pandas; a `Dataset` that turns one row at a time
into a PIL image and back (`ToPILImage`, `Resize(28)`, `ToTensor`, no normalization); a
`DataLoader` with 4 workers; `tutorial_cnn` trained with cross-entropy and Adam at 1e-3, batch
256, and the test set used as validation after every epoch. Its inefficiencies are the point:
do not optimize them away.

    python -m benchmarks.tutorial_baseline [--epochs 20] [--until-accuracy 0.91] [--max-images N]

prints one line per epoch, `epoch K/N test_accuracy A ...`; bench_time_to_accuracy times those
lines.
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
from torchvision import transforms

from benchmarks.process import module
from data_utils import load_fashion_mnist
from models import build_model

# The tutorial's 4 workers are more than this machine's cores; that is the baseline, not a bug.
warnings.filterwarnings("ignore", message="This DataLoader will create")

BATCH_SIZE = 256
NUM_WORKERS = 4
LR = 1e-3
SMOKE_IMAGES = (1024, 512)  # train, test: enough to pass through every line
TRANSFORM = transforms.Compose(
    [transforms.ToPILImage(), transforms.Resize(28), transforms.ToTensor()]
)
# Shared by every benchmark and run: the tutorial starts from CSVs it already has, so writing
# them is setup, paid once per machine, not part of any measurement.
CSV_CACHE = Path(tempfile.gettempdir()) / "fashion-lab-tutorial-csv"


def make_csvs(
    folder: Path = CSV_CACHE,
    train_rows: int | None = None,
    test_rows: int | None = None,
    data_dir: str = "",
) -> tuple[Path, Path]:
    """Write (once) the train and test CSVs from the checksummed IDX files; return their paths.

    Rows default to the whole split; fewer take the first N, for smoke runs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = None
    paths = []
    for split, rows in (("train", train_rows), ("test", test_rows)):
        path = folder / f"{split}-{rows or 'all'}.csv"
        if not path.exists():
            data = data or load_fashion_mnist(data_dir or None)
            images = getattr(data, f"{split}_images")[:rows].reshape(-1, 784).numpy()
            labels = getattr(data, f"{split}_labels")[:rows].numpy()
            frame = pd.DataFrame(images, columns=[f"pixel{i}" for i in range(1, 785)])
            frame.insert(0, "label", labels)
            # Written under a temp name and renamed, so a benchmark running beside this one
            # never reads half a file.
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            frame.to_csv(tmp, index=False)
            os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]


class TutorialDataset(Dataset):
    """A pandas-read CSV served one row at a time through the PIL round trip."""

    def __init__(self, csv_path: Path, transform: Callable = TRANSFORM) -> None:
        frame = pd.read_csv(csv_path)
        # The tutorial pulls the values out of the DataFrame once; .iloc per row would make
        # this baseline slower still.
        self.labels = frame["label"].to_numpy()
        self.images = frame.drop(columns="label").to_numpy(dtype=np.uint8)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        image = self.images[i].reshape(28, 28, 1)
        return self.transform(image), self.labels[i]


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
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
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
        pred = model(x.to(device)).argmax(1)
        correct += (pred == y.to(device)).sum().item()
        total += len(y)
    return correct / total


def train_tutorial(
    epochs: int = 20,
    until_accuracy: float | None = None,
    max_images: int | None = None,
    test_images: int | None = None,
    device: str = "cpu",
    model_name: str = "tutorial_cnn",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train as the tutorial does, testing after every epoch; stop early at until_accuracy.

    Returns per-epoch records with the seconds since this call began (CSV reading included).
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    train_csv, test_csv = make_csvs(train_rows=max_images, test_rows=test_images)
    train_loader = tutorial_loader(TutorialDataset(train_csv))
    test_loader = tutorial_loader(TutorialDataset(test_csv), train=False)
    model = tutorial_model(device, model_name)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    history, reached = [], None
    for epoch in range(1, epochs + 1):
        seen, train_s = train_epoch(model, train_loader, opt, device)
        acc = test_accuracy(model, test_loader, device)
        elapsed = time.perf_counter() - t0
        history.append(
            {
                "epoch": epoch,
                "test_accuracy": acc,
                "train_s": train_s,
                "images_per_s": seen / train_s,
                "elapsed_s": elapsed,
            }
        )
        log(
            f"epoch {epoch}/{epochs} test_accuracy {acc:.4f} "
            f"train {seen / train_s:,.0f} img/s elapsed {elapsed:.1f}s"
        )
        if until_accuracy is not None and acc >= until_accuracy:
            reached = epoch
            break
    return {"history": history, "reached_epoch": reached, "wall_s": time.perf_counter() - t0}


def command(epochs: int, device: str, smoke: bool, *extra: str) -> list[str]:
    """This script's command line, for a run in its own process; writes its CSVs first."""
    images, test_images = SMOKE_IMAGES if smoke else (None, None)
    make_csvs(train_rows=images, test_rows=test_images)
    cmd = module("benchmarks.tutorial_baseline", "--epochs", str(epochs), "--device", device)
    if smoke:
        cmd += ["--max-images", str(images), "--test-images", str(test_images)]
    return [*cmd, *extra]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.tutorial_baseline",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--until-accuracy", type=float, default=None, help="stop at this test accuracy")
    p.add_argument("--max-images", type=int, default=None, help="first N training images only")
    p.add_argument("--test-images", type=int, default=None, help="first N test images only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="tutorial_cnn", help="registry name")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = train_tutorial(
        args.epochs,
        args.until_accuracy,
        args.max_images,
        args.test_images,
        args.device,
        args.model,
        args.seed,
        log=lambda s: print(s, flush=True),
    )
    print(f"reached_epoch: {out['reached_epoch']}")
    print(f"wall_s: {out['wall_s']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
