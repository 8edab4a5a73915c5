"""Tests of data_utils: fast ones on synthetic data, `slow` ones on the real FashionMNIST."""

import gzip
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, cli_env
from torch.utils.data import DataLoader

from data_utils import (
    CLASSES,
    FILES,
    MEAN,
    STD,
    DataError,
    DeviceLoader,
    FashionDataset,
    FashionMNIST,
    find_data_dir,
    load_fashion_mnist,
    locate,
    md5sum,
    read_idx,
    train_val_split,
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_gz(path: Path, raw: bytes, mtime: int = 0) -> Path:
    path.write_bytes(gzip.compress(raw, mtime=mtime))
    return path


@pytest.fixture
def images_3d() -> np.ndarray:
    return np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)


# --- IDX reading -------------------------------------------------------------------------------


def test_read_idx_parses_synthetic_file(tmp_path, images_3d):
    images = read_idx(write_gz(tmp_path / "x.gz", idx_bytes(images_3d)), None)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, images_3d)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    np.testing.assert_array_equal(
        read_idx(write_gz(tmp_path / "y.gz", idx_bytes(labels)), None), labels
    )


def test_read_idx_rejects_bad_magic(tmp_path, images_3d):
    raw = bytearray(idx_bytes(images_3d))
    raw[2] = 0x0D  # float32, which FashionMNIST never uses
    path = write_gz(tmp_path / "bad.gz", bytes(raw))
    with pytest.raises(DataError, match="magic number") as e:
        read_idx(path, None)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("cut", [2, 10, 20])
def test_read_idx_rejects_short_payload(tmp_path, images_3d, cut):
    path = write_gz(tmp_path / "short.gz", idx_bytes(images_3d)[:-cut])
    # 16 header bytes (magic, 3 sizes) and 3*4*5 = 60 pixels make 76; the file holds `cut` fewer.
    says = rf"holds {76 - cut} bytes but its IDX header \(3, 4, 5\) needs 76"
    with pytest.raises(DataError, match=says) as e:
        read_idx(path, None)
    assert str(path) in str(e.value)


def test_read_idx_rejects_truncated_gzip(tmp_path, images_3d):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(images_3d))[:-6])
    with pytest.raises(DataError, match="truncated") as e:
        read_idx(path, None)
    assert str(path) in str(e.value)


def test_read_idx_checks_md5(tmp_path, images_3d):
    raw = idx_bytes(images_3d)
    path = write_gz(tmp_path / "x.gz", raw)
    read_idx(path, md5sum(path))
    wrong = "0" * 32
    with pytest.raises(DataError) as e:
        read_idx(path, wrong)
    assert str(path) in str(e.value) and wrong in str(e.value) and md5sum(path) in str(e.value)


def test_read_idx_accepts_recompressed_copy_by_content_md5(tmp_path, images_3d):
    raw = idx_bytes(images_3d)
    original = write_gz(tmp_path / "a.gz", raw, mtime=0)
    recompressed = write_gz(tmp_path / "b.gz", raw, mtime=12345)
    assert md5sum(original) != md5sum(recompressed)
    raw_md5 = hashlib.md5(raw).hexdigest()
    np.testing.assert_array_equal(read_idx(recompressed, md5sum(original), raw_md5), images_3d)
    with pytest.raises(DataError, match=raw_md5):
        read_idx(recompressed, md5sum(original), "0" * 32)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.gz"):
        read_idx(tmp_path / "nope.gz", None)


# --- locating the data -------------------------------------------------------------------------


def fake_data_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    for f in FILES.values():
        (path / f.name).touch()
    return path


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """A working directory, $FASHION_MNIST_DIR and system directory that hold no data."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(locate.ENV_VAR, raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIR", tmp_path / "system")
    return tmp_path


def test_find_data_dir_prefers_explicit_over_env(nowhere, monkeypatch):
    explicit = fake_data_dir(nowhere / "explicit")
    env = fake_data_dir(nowhere / "env")
    monkeypatch.setenv(locate.ENV_VAR, str(env))
    assert find_data_dir(str(explicit)) == explicit
    assert find_data_dir() == env


def test_find_data_dir_order_after_env(nowhere, monkeypatch):
    system = fake_data_dir(nowhere / "system")
    assert find_data_dir() == system
    local = fake_data_dir(nowhere / "data" / "FashionMNIST" / "raw")
    assert find_data_dir().resolve() == local.resolve()
    monkeypatch.setenv(locate.ENV_VAR, str(nowhere / "empty"))
    assert find_data_dir().resolve() == local.resolve()


def test_find_data_dir_explicit_missing_does_not_fall_through(nowhere, monkeypatch):
    monkeypatch.setenv(locate.ENV_VAR, str(fake_data_dir(nowhere / "env")))
    partial = nowhere / "partial"
    partial.mkdir()
    (partial / FILES["train_images"].name).touch()
    with pytest.raises(DataError) as e:
        find_data_dir(str(partial))
    message = str(e.value)
    assert str(partial) in message and FILES["test_labels"].name in message
    assert FILES["train_images"].name not in message


def test_find_data_dir_lists_every_option_when_nothing_works(nowhere, monkeypatch):
    def no_network() -> None:
        raise OSError("no network")

    monkeypatch.setattr(locate, "_download", no_network)
    with pytest.raises(DataError) as e:
        find_data_dir()
    message = str(e.value)
    for option in (
        "--data-dir",
        "FASHION_MNIST_DIR",
        "data/FashionMNIST/raw",
        "apt-get install dataset-fashion-mnist",
        "no network",
    ):
        assert option in message


# --- split -------------------------------------------------------------------------------------


def test_train_val_split_partitions():
    train, val = train_val_split(1000, val_size=100, seed=3)
    assert len(train) == 900 and len(val) == 100
    assert train.dtype == val.dtype == torch.int64
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(1000))


def test_train_val_split_is_deterministic_and_seeded():
    torch.manual_seed(123)
    a = train_val_split(1000, 100, seed=0)
    torch.manual_seed(456)
    b = train_val_split(1000, 100, seed=0)
    c = train_val_split(1000, 100, seed=1)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize("val_size", [-1, 10, 11])
def test_train_val_split_rejects_bad_size(val_size):
    with pytest.raises(ValueError):
        train_val_split(10, val_size)


# --- real data ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion() -> FashionMNIST:
    return load_fashion_mnist()


# The official MD5s, written out rather than read from data_utils, so a wrong constant there
# fails here: of each .gz (Zalando's README), and of the IDX bytes inside it. Debian's
# dataset-fashion-mnist recompresses the files (no name in the gzip header, another mtime), so a
# copy from there matches only the second; a download from Zalando or torchvision matches both.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    ),
    "train-labels-idx1-ubyte.gz": (
        "25c81989df183df01b3e8a0aad5dffbe",
        "9018921c3c673c538a1fc5bad174d6f9",
    ),
    "t10k-images-idx3-ubyte.gz": (
        "bef4ecab320f06d8554ea6380940ec79",
        "8181f5470baa50b63fa0f6fddb340f0a",
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "bb300cfdad3c16e7a12a480ee83cd310",
        "15d484375f8d13e6eb1aabb0c3f46965",
    ),
}


@pytest.mark.slow
def test_real_data_shapes_and_checksums(fashion):
    assert sorted(f.name for f in FILES.values()) == sorted(OFFICIAL_MD5)
    loaded = {
        "train-images-idx3-ubyte.gz": fashion.train_images,
        "train-labels-idx1-ubyte.gz": fashion.train_labels,
        "t10k-images-idx3-ubyte.gz": fashion.test_images,
        "t10k-labels-idx1-ubyte.gz": fashion.test_labels,
    }
    for name, (gz_md5, raw_md5) in OFFICIAL_MD5.items():
        blob = (fashion.root / name).read_bytes()
        raw = gzip.decompress(blob)
        assert hashlib.md5(blob).hexdigest() == gz_md5 or hashlib.md5(raw).hexdigest() == raw_md5
        # What was loaded is what was hashed: the IDX payload after its header, byte for byte.
        header = 4 + 4 * raw[3]
        payload = torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8)
        assert torch.equal(loaded[name].flatten().to(torch.uint8), payload), name
    assert fashion.md5 == "f4a8712d7a061bf5bd6d2ca38dc4d50a"  # the dataset_md5 tag of every run

    assert fashion.train_images.shape == (60_000, 28, 28)
    assert fashion.test_images.shape == (10_000, 28, 28)
    assert fashion.train_images.dtype == fashion.test_images.dtype == torch.uint8
    assert fashion.train_labels.dtype == fashion.test_labels.dtype == torch.int64
    assert torch.equal(fashion.train_labels.bincount(), torch.full((10,), 6000))
    assert torch.equal(fashion.test_labels.bincount(), torch.full((10,), 1000))
    assert len(CLASSES) == 10
    pixels = fashion.train_images.float() / 255
    assert abs(pixels.mean() - MEAN) < 1e-3 and abs(pixels.std() - STD) < 1e-3


@pytest.mark.slow
def test_real_file_with_flipped_byte_names_file_and_checksum(tmp_path):
    spec = FILES["train_labels"]
    path = tmp_path / spec.name
    shutil.copy(find_data_dir() / spec.name, path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError) as e:
        read_idx(path, spec.md5, spec.raw_md5)
    assert str(path) in str(e.value) and spec.md5 in str(e.value)


@pytest.mark.slow
def test_real_file_truncated_names_file(tmp_path):
    spec = FILES["train_labels"]
    path = tmp_path / spec.name
    path.write_bytes((find_data_dir() / spec.name).read_bytes()[:10_000])
    for expected in [(spec.md5, spec.raw_md5), (None, None)]:
        with pytest.raises(DataError) as e:
            read_idx(path, *expected)
        assert str(path) in str(e.value)


def data_check(*args: str) -> subprocess.CompletedProcess:
    """`python -m data_utils`, the check `make data` runs and stops on."""
    return subprocess.run(
        [sys.executable, "-m", "data_utils", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env(),
        timeout=120,
    )


@pytest.mark.slow
def test_data_check_exits_2_with_the_fix_on_missing_or_damaged_data(tmp_path):
    res = data_check(str(tmp_path / "nowhere"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"error: The data directory {tmp_path / 'nowhere'} lacks")
    assert "Traceback" not in res.stderr

    # Three good files linked in, the fourth with one byte flipped.
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in FILES.values():
        (damaged / f.name).symlink_to(find_data_dir() / f.name)
    labels = damaged / FILES["test_labels"].name
    blob = bytearray(labels.read_bytes())
    blob[100] ^= 0xFF
    labels.unlink()
    labels.write_bytes(bytes(blob))
    res = data_check(str(damaged))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"error: Checksum mismatch for {labels}" in res.stderr
    assert "Traceback" not in res.stderr

    res = data_check()
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == (
        f"FashionMNIST OK in {find_data_dir()} (train-images md5 f4a8712d7a061bf5bd6d2ca38dc4d50a)"
    )


@pytest.mark.slow
def test_device_loader_equals_dataset(fashion):
    """The fast path and the teaching-grade Dataset give bit-identical samples."""
    images, labels = fashion.train_images[:1000], fashion.train_labels[:1000]
    dataset = FashionDataset(images, labels)
    loader = DeviceLoader(images, labels, 128, shuffle=False, augment=False)
    reference = DataLoader(dataset, batch_size=128, shuffle=False)
    start = 0
    for (x, y), (xr, yr) in zip(loader, reference, strict=True):
        stop = start + len(y)
        items = [dataset[i] for i in range(start, stop)]
        assert torch.equal(x, torch.stack([item[0] for item in items]))
        assert torch.equal(y, torch.tensor([item[1] for item in items]))
        assert torch.equal(x, xr) and torch.equal(y, yr)
        start = stop
    assert start == 1000


@pytest.mark.slow
def test_augmented_real_batches_stay_in_range(fashion):
    loader = DeviceLoader(fashion.train_images[:512], fashion.train_labels[:512], 256, augment=True)
    low, high = -MEAN / STD, (1 - MEAN) / STD
    for x, _ in loader:
        assert x.min() >= low - 1e-6 and x.max() <= high + 1e-6
