"""The fixed, seeded train/validation split of the training set."""

import torch


def train_val_split(
    n: int, val_size: int = 5000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted int64 train indices (n - val_size of them) and val indices, a partition of range(n).

    The split depends only on (n, val_size, seed), never on the global RNG.
    """
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in 0..{n - 1} for n={n}, got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values
