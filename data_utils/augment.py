"""Batched data augmentation that runs on whatever device the batch is on."""

import torch
import torch.nn.functional as F


def random_crop_flip(
    x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Per sample, a random crop of `x` zero-padded by `pad`, then a horizontal flip with p=0.5.

    `x` is a batch [B, C, H, W] of any dtype; the result has its shape, dtype and device. All
    randomness comes from `generator`, which must live on x's device.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    b, c, h, w = x.shape
    dev = x.device
    # Drawn unconditionally so that the random stream, and so the batches after this one, do not
    # depend on whether flipping is on.
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), generator=generator, device=dev)
    flipped = torch.randint(0, 2, (b, 1), generator=generator, device=dev).bool()
    rows = dy + torch.arange(h, device=dev)
    ascending = torch.arange(w, device=dev)
    cols = dx + (torch.where(flipped, ascending.flip(0), ascending) if flip else ascending)
    padded = F.pad(x, (pad, pad, pad, pad))
    # One gather reads each output pixel from its source pixel in the padded batch: crop and
    # flip are both just a choice of source index.
    source = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(b, 1, h * w)
    return padded.flatten(2).gather(2, source.expand(b, c, h * w)).view(b, c, h, w)
