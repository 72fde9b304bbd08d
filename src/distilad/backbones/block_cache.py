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
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from distilad.backbones.blocks import BlockTeacher
from distilad.backbones.cache import RowBatches, features_via_entry, read_rows, root_and_rows
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
    if cache_dir is None:
        return _compute(teacher, images, size, keep, batch_size, device, progress, desc)
    root, rows = root_and_rows(images)
    path = Path(cache_dir) / f"{block_cache_key(teacher, root, size, keep)}.safetensors"

    def root_batches() -> RowBatches:
        for first, pooled, parts in _batches(teacher, root, size, keep, batch_size, device,
                                             progress, desc):
            yield first, len(root), {"pooled": pooled, **{f"b{j}": t for j, t in parts.items()}}

    return features_via_entry(
        path, lambda p: _load(p, keep, rows), root_batches,
        lambda: _compute(teacher, images, size, keep, batch_size, device, progress, desc))


def _load(path: Path, keep: Sequence[int], rows: torch.Tensor | None) -> Features:
    """The pooled features and the boundaries ``keep`` of an entry, rows ``rows`` only (read
    from disk row by row: no full copy of a boundary beside the subset's)."""
    return read_rows(path, "pooled", rows), {j: read_rows(path, f"b{j}", rows) for j in keep}


def _batches(teacher: BlockTeacher, images: ImageSet, size: int, keep: Sequence[int],
             batch_size: int, device: torch.device | str, progress: bool, desc: str
             ) -> Iterator[tuple[int, torch.Tensor, dict[int, torch.Tensor]]]:
    """(first row, pooled (b, D), {j: boundary j (b, ...)}) per batch, float32 on the CPU."""
    if len(images) == 0:
        raise ValueError("block_features: no images")
    teacher = teacher.to(device)
    bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False)
    for idx, x, _ in iter_batches(images, batch_size, size):
        pooled, out = teacher(x.to(device), keep)
        yield idx[0], pooled.float().cpu(), {j: out[j].float().cpu() for j in keep}
        bar.update(len(idx))
    bar.close()


def _compute(teacher: BlockTeacher, images: ImageSet, size: int, keep: Sequence[int],
             batch_size: int, device: torch.device | str, progress: bool, desc: str) -> Features:
    """Outputs filled batch by batch into tensors allocated once (no concatenation peak)."""
    n = len(images)
    pooled_all: torch.Tensor | None = None
    parts: dict[int, torch.Tensor] = {}
    for first, pooled, out in _batches(teacher, images, size, keep, batch_size, device,
                                       progress, desc):
        if pooled_all is None:
            pooled_all = torch.empty((n, *pooled.shape[1:]), dtype=torch.float32)
            parts = {j: torch.empty((n, *out[j].shape[1:]), dtype=torch.float32) for j in keep}
        pooled_all[first:first + len(pooled)] = pooled
        for j in keep:
            parts[j][first:first + len(pooled)] = out[j]
    assert pooled_all is not None
    return pooled_all, parts
