"""Dataset lineage: each split a run sees becomes one of its MLflow dataset inputs, named by its
files and selection alone: no pixel is read, hashed or uploaded for it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source import DatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from experiments.callbacks import DataSplit

CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


class IdxFiles(DatasetSource):
    """Where a split is read from: its IDX files, images then labels."""

    def __init__(self, files: Sequence[str]) -> None:
        self.files = list(files)

    @staticmethod
    def _get_source_type() -> str:
        return "idx_files"

    def load(self) -> list[str]:
        return self.files

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> IdxFiles:
        raise NotImplementedError("IdxFiles is built from a DataSplit, never resolved")

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> IdxFiles:
        return cls(source_dict["files"])


class SplitDataset(Dataset):
    """A split as the runs table's Datasets column shows it: fashion-mnist-<role>, with a
    digest of the files' MD5s, the selection and the size, so runs on other data differ."""

    def __init__(self, split: DataSplit) -> None:
        self.split = split  # before super().__init__, which computes the digest from it
        files = IdxFiles([str(p.resolve()) for p in split.files])
        super().__init__(source=files, name=f"fashion-mnist-{split.role}")

    def _compute_digest(self) -> str:
        s = self.split
        key = json.dumps([s.md5s, s.selection, s.size], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:10]

    @property
    def profile(self) -> dict[str, int]:
        return {"images": self.split.size, **self.split.selection}

    @property
    def schema(self) -> None:
        return None

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def dataset_inputs(splits: Sequence[DataSplit]) -> list[DatasetInput]:
    """The splits as dataset inputs of a run, each tagged with its context (training, ...)."""
    return [
        DatasetInput(
            SplitDataset(s)._to_mlflow_entity(),
            [InputTag(MLFLOW_DATASET_CONTEXT, CONTEXTS[s.role])],
        )
        for s in splits
    ]
