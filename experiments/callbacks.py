"""The engine's contract: the hooks a run calls (tracking and pruning are callbacks) and what
it returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from experiments.config import Config


class Callback:
    """Hooks the loop calls. Tracking (MLflow) and pruning (Optuna) are callbacks."""

    def on_start(self, dataset_md5: str, extra_params: dict[str, Any]) -> None: ...

    def on_data(self, splits: list[DataSplit]) -> None:
        """Called after on_start with the splits the run trains, validates and tests on."""

    def on_resume(
        self, history: list[dict[str, float]], train_losses: list[tuple[int, float]]
    ) -> None:
        """Called after on_start with what the checkpoint holds of the epochs already run."""

    def on_epoch_end(
        self, epoch: int, metrics: dict[str, float], train_losses: list[tuple[int, float]]
    ) -> None: ...

    def on_checkpoint(self, path: Path) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...

    def on_error(self, status: str, reason: str, tags: dict[str, Any] | None = None) -> None: ...


@dataclass(frozen=True)
class DataSplit:
    """One split a run sees, told apart from any other without reading a pixel: the IDX files
    it is cut from, their MD5s (verified when they were read), which of their images it takes."""

    role: str  # train, val or test
    files: tuple[Path, ...]  # images, then labels
    md5s: tuple[str, ...]  # of the files' decompressed bytes
    selection: dict[str, int]  # what picks its images from the files: split seed and sizes
    size: int  # images


@dataclass
class TrainResult:
    cfg: Config
    history: list[dict[str, float]]  # one dict of metrics per epoch, resumed epochs included
    best_val_accuracy: float | None  # None without a validation split
    test_accuracy: float | None  # the test_* fields are None when train(test=False)
    test_loss: float | None
    epochs_run: int  # epochs trained by this call (fewer than cfg.epochs after a resume)
    wall_s: float
    model: nn.Module = field(repr=False)
    test_logits: Tensor | None = field(repr=False)
    test_labels: Tensor = field(repr=False)
    test_images: Tensor = field(repr=False)  # uint8, for plots of misclassified images


class Callbacks:
    """Many callbacks as one: calling a hook calls it on each of them, in order."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.all = list(callbacks)

    def __getattr__(self, hook: str) -> Callable[..., None]:
        def call(*args: Any) -> None:
            for cb in self.all:
                getattr(cb, hook)(*args)

        return call
