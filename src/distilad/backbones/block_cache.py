"""A block teacher's outputs computed once and reused (the block-teacher twin of ``cache.py``,
whose entry reading and writing and subset lookup it shares).

``block_features`` runs a frozen :class:`BlockTeacher` over an ImageSet and returns the pooled
pretrained features and the boundaries asked for. With a cache folder the result is stored under
a key made of the teacher (name + weights fingerprint), the input size, the boundaries kept and
the pixels (the ImageSet's content fingerprint), so a sweep over classes and seeds pays for the
teacher once per dataset. A subset (a seeded hold-out split) is served from its parent's entry.
Entries are streamed to disk batch by batch and renamed into place (``cache.stream_entry``), and
a subset reads only its rows back, so neither the root set nor a second copy of a boundary is
ever held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from distilad.backbones.blocks import BlockTeacher
from distilad.backbones.cache import cached_features
from distilad.data.base import ImageSet

Features = tuple[torch.Tensor, dict[int, torch.Tensor]]


def block_cache_key(teacher: BlockTeacher, images: ImageSet, size: int, keep: Sequence[int]) -> str:
    text = (f"blocks|{teacher.identity}|size={size}|keep={sorted(keep)}|"
            f"{images.content_fingerprint}")
    return hashlib.sha1(text.encode()).hexdigest()[:24]


@torch.no_grad()
def boundary_bytes(teacher: BlockTeacher, size: int, keep: Sequence[int],
                   device: torch.device | str = "cpu") -> int:
    """Bytes per image (float32) of the boundaries ``keep`` and the pooled feature at ``size``."""
    was = next(teacher.parameters()).device
    teacher.to(device)
    pooled, out = teacher(torch.zeros(1, 3, size, size, device=device), keep)
    teacher.to(was)
    return 4 * (pooled.numel() + sum(t.numel() for t in out.values()))


@torch.inference_mode()
def block_features(
    teacher: BlockTeacher, images: ImageSet, size: int, keep: Sequence[int] = (),
    batch_size: int = 64, device: torch.device | str = "cpu", cache_dir: str | Path | None = None,
    progress: bool = False, desc: str = "teacher features",
) -> Features:
    """(pooled (N, feature_dim), {j: boundary j (N, ...) for j in keep}), float32 on the CPU.

    With ``cache_dir`` the result is loaded from / saved to ``<cache_dir>/<key>.safetensors``;
    a subset of an ImageSet is served from its root set's entry (made first when missing). Sets
    made anew for every run (``reuse_features = False``: synthetic defects) are never cached.
    """
    keep = sorted(set(keep))
    names = {"pooled", *(f"b{j}" for j in keep)}
    teacher = teacher.to(device)

    def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled, out = teacher(x.to(device), keep)
        return {"pooled": pooled.float().cpu(), **{f"b{j}": out[j].float().cpu() for j in keep}}

    feats = cached_features(images, size, batch_size, forward,
                            lambda root: block_cache_key(teacher, root, size, keep), cache_dir,
                            names.__contains__, progress, desc)
    return feats["pooled"], {j: feats[f"b{j}"] for j in keep}
