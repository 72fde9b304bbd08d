"""A block teacher's outputs computed once and reused (the block-teacher twin of ``cache.py``,
whose entry reading and writing and subset lookup it shares).

``block_features`` runs a frozen :class:`BlockTeacher` over an ImageSet and returns the pooled
pretrained features and the boundaries asked for. With a cache folder the result is stored under
a key made of the teacher (name + weights fingerprint), the input size, the boundaries kept and
the pixels (the ImageSet's content fingerprint), so a sweep over classes and seeds pays for the
teacher once per dataset. A subset (a seeded hold-out split) is served from its parent's entry.
Files are written atomically (temp + rename).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from distilad.backbones.blocks import BlockTeacher
from distilad.backbones.cache import read_entry, read_rows, root_and_rows, write_entry
from distilad.data.base import ImageSet
from distilad.data.transforms import iter_batches

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
    if not getattr(images, "reuse_features", True):
        cache_dir = None
    root, rows = root_and_rows(images) if cache_dir is not None else (images, None)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{block_cache_key(teacher, root, size, keep)}.safetensors"
        cached = read_entry(path, lambda p: _load(p, keep, rows))
        if cached is not None:
            return cached
    pooled, parts = _compute(teacher, root, size, keep, batch_size, device, progress, desc)
    if path is not None:
        write_entry(path, {"pooled": pooled, **{f"b{j}": t for j, t in parts.items()}})
    if rows is not None:
        pooled = pooled[rows]
        for j in keep:  # one boundary at a time: never two full copies of all of them
            parts[j] = parts[j][rows]
    return pooled, parts


def _load(path: Path, keep: Sequence[int], rows: torch.Tensor | None) -> Features:
    """The pooled features and the boundaries ``keep`` of an entry, rows ``rows`` only (read
    from disk row by row: no full copy of a boundary beside the subset's)."""
    return read_rows(path, "pooled", rows), {j: read_rows(path, f"b{j}", rows) for j in keep}


def _compute(teacher: BlockTeacher, images: ImageSet, size: int, keep: Sequence[int],
             batch_size: int, device: torch.device | str, progress: bool, desc: str) -> Features:
    """Outputs filled batch by batch into tensors allocated once (no concatenation peak)."""
    if len(images) == 0:
        raise ValueError("block_features: no images")
    teacher = teacher.to(device)
    n = len(images)
    pooled_all: torch.Tensor | None = None
    parts: dict[int, torch.Tensor] = {}
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
    for idx, x, _ in iter_batches(images, batch_size, size):
        pooled, out = teacher(x.to(device), keep)
        if pooled_all is None:
            pooled_all = torch.empty((n, *pooled.shape[1:]), dtype=torch.float32)
            parts = {j: torch.empty((n, *out[j].shape[1:]), dtype=torch.float32) for j in keep}
        rows = slice(idx[0], idx[-1] + 1)
        pooled_all[rows] = pooled.float().cpu()
        for j in keep:
            parts[j][rows] = out[j].float().cpu()
        bar.update(len(idx))
    bar.close()
    assert pooled_all is not None
    return pooled_all, parts
