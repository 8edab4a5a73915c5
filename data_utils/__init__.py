"""FashionMNIST data: verified IDX reading, locating, splitting, augmenting and batching."""

from data_utils.augment import random_crop_flip
from data_utils.dataset import FashionDataset
from data_utils.fashion import CLASSES, MEAN, STD, FashionMNIST, load_fashion_mnist, normalize
from data_utils.idx import FILES, DataError, IdxFile, md5sum, read_idx
from data_utils.loader import DeviceLoader
from data_utils.locate import find_data_dir
from data_utils.split import train_val_split

__all__ = [
    "CLASSES",
    "FILES",
    "MEAN",
    "STD",
    "DataError",
    "DeviceLoader",
    "FashionDataset",
    "FashionMNIST",
    "IdxFile",
    "find_data_dir",
    "load_fashion_mnist",
    "md5sum",
    "normalize",
    "random_crop_flip",
    "read_idx",
    "train_val_split",
]
