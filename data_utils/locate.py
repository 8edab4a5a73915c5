"""Finding the FashionMNIST files, or fetching them when they are nowhere to be found."""

import os
from pathlib import Path

from data_utils.idx import FILES, DataError

ENV_VAR = "FASHION_MNIST_DIR"
DOWNLOAD_ROOT = Path("data")
LOCAL_DIR = DOWNLOAD_ROOT / "FashionMNIST" / "raw"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def _missing_files(directory: Path) -> list[str]:
    """The FashionMNIST .gz file names that `directory` lacks."""
    return [f.name for f in FILES.values() if not (directory / f.name).is_file()]


def find_data_dir(data_dir: str | Path | None = None) -> Path:
    """The first directory holding all four FashionMNIST .gz files.

    Looks in `data_dir`, then $FASHION_MNIST_DIR, then data/FashionMNIST/raw (relative to the
    working directory), then /usr/share/datasets/fashion-mnist, and downloads into data/ with
    torchvision if none has them.
    """
    if data_dir is not None:
        # A directory the user named is never silently swapped for another one.
        directory = Path(data_dir)
        if missing := _missing_files(directory):
            raise DataError(
                f"The data directory {directory} lacks {', '.join(missing)}. Put the FashionMNIST "
                f".gz files there, or point --data-dir elsewhere."
            )
        return directory
    candidates = [LOCAL_DIR, SYSTEM_DIR]
    if env_dir := os.environ.get(ENV_VAR):
        candidates.insert(0, Path(env_dir))
    for directory in candidates:
        if not _missing_files(directory):
            return directory
    try:
        _download()
    except (ImportError, OSError, RuntimeError) as e:
        looked = "".join(f"\n  {d}" for d in candidates)
        raise DataError(
            f"FashionMNIST was not found; looked in:{looked}\nand downloading it failed ({e}).\n"
            "Provide the four .gz files in one of these ways:\n"
            "  --data-dir DIR\n"
            f"  export {ENV_VAR}=DIR\n"
            f"  copy them into {LOCAL_DIR}/ (relative to the working directory)\n"
            f"  apt-get install dataset-fashion-mnist  (installs them into {SYSTEM_DIR})"
        ) from e
    if missing := _missing_files(LOCAL_DIR):
        raise DataError(
            f"torchvision's download left {LOCAL_DIR} without {', '.join(missing)}. "
            "Delete the directory and try again, or use --data-dir."
        )
    return LOCAL_DIR


def _download() -> None:
    # Imported here so that everything else in data_utils works without torchvision.
    from torchvision import datasets

    datasets.FashionMNIST(root=str(DOWNLOAD_ROOT), download=True)
