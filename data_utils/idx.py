"""Reading FashionMNIST's IDX ``.gz`` files, with checksum and format checks."""

import gzip
import hashlib
import math
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

_UBYTE = 0x08
_MAGIC_LEN = 4


class DataError(Exception):
    """The data is missing, corrupt or not FashionMNIST. The message says what to do."""


class IdxFile(NamedTuple):
    name: str
    md5: str
    raw_md5: str


# `md5` is the official checksum of the .gz from Zalando's README. Debian's dataset-fashion-mnist
# recompresses the files, so its .gz checksums differ although the IDX bytes inside are identical;
# `raw_md5`, the checksum of the decompressed bytes, accepts such copies and nothing else.
FILES: dict[str, IdxFile] = {
    "train_images": IdxFile(
        "train-images-idx3-ubyte.gz",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    ),
    "train_labels": IdxFile(
        "train-labels-idx1-ubyte.gz",
        "25c81989df183df01b3e8a0aad5dffbe",
        "9018921c3c673c538a1fc5bad174d6f9",
    ),
    "test_images": IdxFile(
        "t10k-images-idx3-ubyte.gz",
        "bef4ecab320f06d8554ea6380940ec79",
        "8181f5470baa50b63fa0f6fddb340f0a",
    ),
    "test_labels": IdxFile(
        "t10k-labels-idx1-ubyte.gz",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "15d484375f8d13e6eb1aabb0c3f46965",
    ),
}

_FIX = (
    "Delete it and download it again (https://github.com/zalandoresearch/fashion-mnist), "
    "or run `apt-get install --reinstall dataset-fashion-mnist`."
)


def md5sum(path: str | Path) -> str:
    """The hex MD5 of the bytes of the file at `path`."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _decompress(blob: bytes) -> bytes | None:
    """The gunzipped `blob`, or None if it is not a complete, valid gzip stream."""
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error):
        return None


def read_idx(
    path: str | Path, expected_md5: str | None, expected_raw_md5: str | None = None
) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes into an array of the shape its header gives.

    With `expected_md5` (of the .gz file) and/or `expected_raw_md5` (of the decompressed bytes),
    the file must match one of them; with neither, only the format is checked.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e}. {_FIX}") from e
    raw = _decompress(blob)
    if expected_md5 is not None or expected_raw_md5 is not None:
        _check_md5(path, blob, raw, expected_md5, expected_raw_md5)
    if raw is None:
        raise DataError(f"{path} is truncated or not a valid gzip file. {_FIX}")
    return _parse(path, raw)


def _check_md5(
    path: Path, blob: bytes, raw: bytes | None, expected: str | None, expected_raw: str | None
) -> None:
    actual = hashlib.md5(blob).hexdigest()
    actual_raw = None if raw is None else hashlib.md5(raw).hexdigest()
    if actual == expected or (actual_raw is not None and actual_raw == expected_raw):
        return
    wanted = " or ".join(
        f"{what} {md5}"
        for what, md5 in (("MD5", expected), ("decompressed MD5", expected_raw))
        if md5 is not None
    )
    got = f"MD5 {actual}" + (
        ", which cannot be decompressed" if raw is None else f", decompressed MD5 {actual_raw}"
    )
    raise DataError(f"Checksum mismatch for {path}: expected {wanted}, got {got}. {_FIX}")


def _parse(path: Path, raw: bytes) -> np.ndarray:
    if len(raw) < _MAGIC_LEN:
        raise DataError(f"{path} is too short to hold an IDX header. {_FIX}")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != _UBYTE or ndim == 0:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes: magic number "
            f"0x{raw[:4].hex()} (expected 0x0000080N, N = number of dimensions). {_FIX}"
        )
    body = _MAGIC_LEN + 4 * ndim
    if len(raw) < body:
        raise DataError(f"{path} is truncated inside its IDX header. {_FIX}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected_len = body + math.prod(shape)
    if len(raw) != expected_len:
        raise DataError(
            f"{path} holds {len(raw)} bytes but its IDX header {shape} needs {expected_len}: "
            f"the file is truncated or corrupt. {_FIX}"
        )
    # A copy, because arrays over `bytes` are read-only and torch.from_numpy warns about those.
    return np.frombuffer(raw, dtype=np.uint8, offset=body).reshape(shape).copy()
