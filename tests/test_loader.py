"""Batched augmentation and the on-device loader, on data the tests make."""

import pytest
import torch

from data_utils import (
    MEAN,
    STD,
    DeviceLoader,
    normalize,
    random_crop_flip,
)

# --- augmentation ------------------------------------------------------------------------------


def asymmetric_batch(b: int = 64, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    image = torch.zeros(28, 28)
    image[4:20, 6:10] = 200  # a bar left of centre
    image[4, 6:24] = 100  # and a top stroke to its right
    return image.to(dtype).expand(b, 1, 28, 28).clone()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_keeps_shape_and_dtype(dtype):
    x = asymmetric_batch(dtype=dtype)
    y = random_crop_flip(x, pad=2, flip=True, generator=gen())
    assert y.shape == x.shape and y.dtype == dtype


def test_flip_really_flips():
    x = asymmetric_batch()
    y = random_crop_flip(x, pad=0, flip=True, generator=gen())
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ mirrored)
    assert 10 < mirrored.sum() < 54
    assert torch.equal(random_crop_flip(x, pad=0, flip=False, generator=gen()), x)


def test_crop_shifts_content():
    pad = 2
    x = asymmetric_batch()
    y = random_crop_flip(x, pad=pad, flip=False, generator=gen())
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    shifts = torch.stack(
        [padded[..., dy : dy + 28, dx : dx + 28] for dy in range(5) for dx in range(5)]
    )
    matches = (shifts == y).flatten(2).all(2)  # [shift, sample]
    assert torch.all(matches.sum(0) == 1)
    assert len(set(matches.int().argmax(0).tolist())) > 10
    # Pixels shifted out are gone and zeros come in: the bar's mass is kept or cut, never grown.
    assert torch.all(y.sum((1, 2, 3), dtype=torch.int64) <= x.sum((1, 2, 3), dtype=torch.int64))


def test_augment_is_reproducible_from_generator():
    x = asymmetric_batch()
    a = random_crop_flip(x, 2, True, gen(7))
    b = random_crop_flip(x, 2, True, gen(7))
    c = random_crop_flip(x, 2, True, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_normalize_matches_formula_and_leaves_float_input_alone():
    pixels = torch.tensor([0, 73, 255], dtype=torch.uint8)
    as_float = pixels.float()
    expected = (as_float / 255 - MEAN) / STD
    assert torch.equal(normalize(pixels), expected)
    assert torch.equal(normalize(as_float), expected)
    assert torch.equal(as_float, pixels.float())


# --- DeviceLoader on synthetic data ------------------------------------------------------------


def id_loader(n: int = 103, batch_size: int = 10, **kwargs) -> DeviceLoader:
    """A loader whose labels are the sample indices, and whose image i is filled with i % 256."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1).expand(n, 28, 28).clone()
    return DeviceLoader(images, torch.arange(n), batch_size, **kwargs)


def epoch_order(loader: DeviceLoader) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def test_device_loader_batches_and_len():
    loader = id_loader(drop_last=False)
    batches = list(loader)
    assert len(loader) == len(batches) == 11
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    x, y = batches[0]
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    dropped = id_loader(drop_last=True)
    assert len(dropped) == len(list(dropped)) == 10


def test_device_loader_covers_every_index_once():
    loader = id_loader(shuffle=True, augment=True)
    for _ in range(3):
        order = epoch_order(loader)
        assert torch.equal(order.sort().values, torch.arange(103))


def test_device_loader_images_follow_labels():
    for x, y in id_loader(shuffle=True):
        assert torch.equal(x[:, 0, 0, 0], ((y % 256).float() / 255 - MEAN) / STD)


def test_device_loader_reproducible_from_seed_and_epoch():
    a, b = id_loader(seed=1, augment=True), id_loader(seed=1, augment=True)
    a.set_epoch(4)
    b.set_epoch(4)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = id_loader(seed=1)
    c.set_epoch(5)
    d = id_loader(seed=2)
    d.set_epoch(4)
    b.set_epoch(4)
    assert not torch.equal(epoch_order(b), epoch_order(c))
    b.set_epoch(4)
    assert not torch.equal(epoch_order(b), epoch_order(d))


def test_device_loader_advances_epoch_and_resumes():
    loader = id_loader(seed=3)
    first, second = epoch_order(loader), epoch_order(loader)
    assert not torch.equal(first, second)
    resumed = id_loader(seed=3)
    resumed.set_epoch(1)
    assert torch.equal(epoch_order(resumed), second)


def test_device_loader_no_shuffle_is_in_order():
    assert torch.equal(epoch_order(id_loader(shuffle=False)), torch.arange(103))


def test_device_loader_index_serves_those_rows_as_a_copy_of_them_would():
    n, index = 103, torch.randperm(103, generator=torch.Generator().manual_seed(0))[:40]
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1).expand(n, 28, 28).clone()
    shared = DeviceLoader(images, torch.arange(n), 8, index=index, seed=5, augment=True)
    copied = DeviceLoader(images[index], torch.arange(n)[index], 8, seed=5, augment=True)
    assert len(shared) == len(copied) == 5 and shared.size == 40
    for _ in range(2):  # two epochs: the same order and augmentation as the copy's
        for (xs, ys), (xc, yc) in zip(shared, copied, strict=True):
            assert torch.equal(xs, xc) and torch.equal(ys, yc)
    assert shared.images.data_ptr() == images.data_ptr()  # on the CPU: no copy at all
    in_order = DeviceLoader(images, torch.arange(n), 8, index=index, shuffle=False)
    assert torch.equal(epoch_order(in_order), index)


@pytest.mark.parametrize(
    "index",
    [
        torch.tensor([0, 103]),
        torch.tensor([-1]),
        torch.zeros(2, 2, dtype=torch.int64),
        torch.tensor([0.0, 1.0]),
        torch.tensor([True, False]),
    ],
    ids=["past_the_end", "negative", "2d", "float", "bool_mask"],
)
def test_device_loader_rejects_an_index_that_is_not_row_numbers(index):
    with pytest.raises(ValueError, match="index must be 1-D integer row numbers in"):
        id_loader(index=index)


def test_device_loader_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(torch.zeros(4, 28, 28), torch.zeros(4, dtype=torch.int64), 2)


def test_device_loader_channels_last():
    x, _ = next(iter(id_loader(channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


# --- a run's splits ------------------------------------------------------------------------------


def served(seed: int, train_subset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows a run's train and val loaders serve in an epoch: each row's label is its number."""
    from types import SimpleNamespace

    from experiments.config import Config
    from experiments.splits import loaders

    rows = 6000
    data = SimpleNamespace(
        train_images=torch.zeros(rows, 28, 28, dtype=torch.uint8),
        train_labels=torch.arange(rows),
        test_images=torch.zeros(10, 28, 28, dtype=torch.uint8),
        test_labels=torch.zeros(10, dtype=torch.int64),
    )
    cfg = Config(seed=seed, val_size=500, train_subset=train_subset, batch_size=256)
    train, val, _ = loaders(cfg, data, torch.device("cpu"))
    return torch.cat([y for _, y in train]), torch.cat([y for _, y in val])


@pytest.mark.parametrize("train_subset", [0, 1024])
def test_a_runs_seed_moves_no_image_between_the_rows_it_is_served(train_subset):
    (train_0, val_0), (train_1, val_1) = served(0, train_subset), served(1, train_subset)
    assert len(train_0) == (train_subset or 5500) == len(set(train_0.tolist()))
    assert torch.equal(train_0.sort().values, train_1.sort().values)
    assert not torch.equal(train_0, train_1), "the seed should still shuffle them"
    assert torch.equal(val_0, val_1)
    assert set(val_0.tolist()).isdisjoint(train_0.tolist())
