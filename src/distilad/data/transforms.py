"""Preprocessing shared by the detectors: float images -> fixed-size tensors, maps -> input size."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from distilad.data.base import ImageSet


def to_tensor(image: np.ndarray, size: int | tuple[int, int], channels: int = 3) -> torch.Tensor:
    """float32 (H, W, C) in [0, 1] -> (channels, size, size) tensor, bilinear with antialiasing.

    Gray images are repeated to 3 channels (and colour averaged to 1 when ``channels == 1``).
    """
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    if t.shape[0] == 1 and channels == 3:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 3 and channels == 1:
        t = t.mean(0, keepdim=True)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(t.shape[1:]) != hw:
        t = F.interpolate(t[None], size=hw, mode="bilinear", align_corners=False,
                          antialias=True)[0].clamp_(0, 1)
    return t


def stack_images(images: ImageSet, indices: Sequence[int], size: int, channels: int = 3
                 ) -> torch.Tensor:
    """Images ``indices`` as one (B, channels, size, size) tensor."""
    return torch.stack([to_tensor(images.image(i), size, channels) for i in indices])


def iter_batches(images: ImageSet, batch_size: int, size: int, channels: int = 3
                 ) -> Iterator[tuple[list[int], torch.Tensor, list[tuple[int, int]]]]:
    """Yield (indices, (B, C, size, size) tensor, original (H, W) per image) in order."""
    n = len(images)
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        raw = [images.image(i) for i in idx]
        shapes = [r.shape[:2] for r in raw]
        yield idx, torch.stack([to_tensor(r, size, channels) for r in raw]), shapes


def resize_map(amap: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w) map -> (H, W), bilinear; returned unchanged when the size already matches."""
    if tuple(amap.shape) == tuple(hw):
        return amap
    t = torch.from_numpy(np.ascontiguousarray(amap, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False)[0, 0].numpy()
