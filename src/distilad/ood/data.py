"""Images for the OOD classifier: uint8 arrays from :func:`distilad.data.novelty.load_split` to
float tensors (B, 3, 32, 32) in [0, 1], and the relabelling of a class-held-out training set."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

SIZE = 32


def to_rgb32(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W) gray or (N, H, W, 3) RGB -> float32 (N, 3, 32, 32) in [0, 1].

    Gray images (MNIST, Fashion-MNIST, 28 px) are resized bilinearly to 32 px and repeated over
    the three channels; RGB images must already be 32 px (CIFAR-10)."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).float().div_(255.0)  # a writable copy
    if x.ndim == 3:
        x = x[:, None]
        if x.shape[-1] != SIZE:
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            x = x.clamp_(0.0, 1.0)
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape[1:3] != (SIZE, SIZE):
        raise ValueError(f"expected (N, 28|32, 28|32) gray or (N, 32, 32, 3) RGB, got {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).contiguous()


def kept_classes(num_classes: int, held_out: Sequence[int]) -> list[int]:
    """The classes a classifier trains on: ``0..num_classes-1`` without ``held_out``."""
    bad = [c for c in held_out if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"held-out classes {bad} outside 0..{num_classes - 1}")
    kept = [c for c in range(num_classes) if c not in set(held_out)]
    if len(kept) < 2:
        raise ValueError("a classifier needs at least two classes left after holding out")
    return kept


def relabel(labels: np.ndarray, kept: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the images whose class is in ``kept``, their labels renumbered 0..len(kept)-1 in
    the order of ``kept``)."""
    lookup = np.full(int(max(kept)) + 1 if len(kept) else 0, -1, dtype=np.int64)
    lookup[list(kept)] = np.arange(len(kept))
    labels = np.asarray(labels, dtype=np.int64)
    mask = np.isin(labels, list(kept))
    return mask, lookup[labels[mask]]
