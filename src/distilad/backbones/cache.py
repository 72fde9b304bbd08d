"""Teacher features computed once and reused.

``teacher_features`` runs a frozen teacher over an ImageSet and returns its maps. With a cache
folder, the result is stored under a key made of the teacher (name + weights fingerprint), the
preprocessing (size, channels) and the data (the ImageSet's fingerprint), so a sweep over classes
and seeds pays for the teacher once per dataset. Files are written atomically (temp + rename), so
an interrupted run never leaves a half-written entry.

Memory: only the features are kept, never the preprocessed input images (an earlier version
cached and returned those too, which on a 700-image 256 px category more than doubled the peak).
The output tensors are allocated once and filled batch by batch, and the teacher's batch is
capped at :data:`MAX_BATCH_PIXELS` input pixels, so a large score batch at 256 px cannot
multiply the activation memory. Subsets (seeded hold-out splits) read their rows from the parent
set's entry one tap at a time.

One-off sets (synthetic defects and validation samples, made anew for every run) say so with
``reuse_features = False`` and are computed without touching the cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from distilad.backbones.base import Teacher
from distilad.data.base import ImageSet, SubsetImageSet
from distilad.data.transforms import iter_batches
from distilad.errors import CacheWarning

#: at most this many input pixels per teacher batch: 16 images at 256 px (as ``fit`` scores),
#: 256 at 64 px. Measured on CPU (efficientnet_lite1, 256 px, 83 images): the teacher's
#: activations raise the peak by 0.46 GB at batch 16 and 1.4 GB at batch 64 (by extrapolation
#: ~5 GB at the batch of 256 that scoring through the cache asks for).
MAX_BATCH_PIXELS = 16 * 256 * 256


def cache_key(teacher: Teacher, images: ImageSet, size: int, channels: int = 3) -> str:
    text = f"{teacher.identity}|size={size}|ch={channels}|{images.content_fingerprint}"
    return hashlib.sha1(text.encode()).hexdigest()[:24]


def teacher_batch_size(batch_size: int, size: int) -> int:
    """``batch_size`` capped at :data:`MAX_BATCH_PIXELS` pixels of ``size`` x ``size`` inputs."""
    return max(1, min(int(batch_size), MAX_BATCH_PIXELS // (size * size)))


@torch.inference_mode()
def teacher_features(
    teacher: Teacher, images: ImageSet, size: int, batch_size: int = 32,
    device: torch.device | str = "cpu", cache_dir: str | Path | None = None,
    progress: bool = False, desc: str = "teacher features",
) -> list[torch.Tensor]:
    """The teacher's maps of every image, ``[(N, c_i, h_i, w_i) float32 per tap]``, on the CPU.

    With ``cache_dir`` they are loaded from / saved to ``<cache_dir>/<key>.safetensors``; a
    subset of an ImageSet is served from its root set's entry (made first when missing).
    """
    if not getattr(images, "reuse_features", True):
        cache_dir = None
    root, rows = root_and_rows(images) if cache_dir is not None else (images, None)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(teacher, root, size)}.safetensors"
        cached = read_entry(path, lambda p: _load(p, rows))
        if cached is not None:
            return cached
    feats = _compute(teacher, root, size, batch_size, device, progress, desc)
    if path is not None:
        write_entry(path, {f"f{i}": f.contiguous() for i, f in enumerate(feats)})
    if rows is not None:
        for i, f in enumerate(feats):  # one tap at a time: never two full copies of all taps
            feats[i] = f[rows]
            del f
    return feats


def root_and_rows(images: ImageSet) -> tuple[ImageSet, torch.Tensor | None]:
    """(the set at the bottom of a chain of subsets, the rows of ``images`` in it or None): the
    set whose cache entry serves ``images``, and where in that entry ``images`` lie."""
    rows = None
    while isinstance(images, SubsetImageSet):
        idx = np.asarray(images.indices, dtype=np.int64)
        rows = idx if rows is None else idx[rows]
        images = images.parent
    return images, None if rows is None else torch.as_tensor(rows, dtype=torch.long)


_Entry = TypeVar("_Entry")
#: free space, in bytes, a new cache entry must leave on its disk
DISK_HEADROOM = 1e9


def read_entry(path: Path, read: Callable[[Path], _Entry]) -> _Entry | None:
    """``read(path)`` of a cache entry; None when there is none, or when it is damaged (it is
    then deleted, to be recomputed and written again)."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except Exception:
        path.unlink(missing_ok=True)
        return None


def write_entry(path: Path, tensors: dict[str, torch.Tensor]) -> bool:
    """Save ``tensors`` as the safetensors file ``path``, atomically (temp file + rename), so an
    interrupted run never leaves a half-written entry. An entry that would leave less than
    :data:`DISK_HEADROOM` bytes free on its disk, or whose write fails (a full disk, a read-only
    folder), is not written: a :class:`CacheWarning` says so and the run goes on. Returns
    whether the entry was written."""
    from safetensors.torch import save_file

    needed = sum(t.numel() * t.element_size() for t in tensors.values())
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if needed + DISK_HEADROOM > free:
            warnings.warn(f"feature cache: not written, the entry needs {needed / 1e9:.1f} GB and "
                          f"{path.parent} has {free / 1e9:.1f} GB free (keeping "
                          f"{DISK_HEADROOM / 1e9:.0f} GB); the run goes on without it",
                          CacheWarning, stacklevel=2)
            return False
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"feature cache: not written ({e}); the run goes on without it",
                      CacheWarning, stacklevel=2)
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _load(path: Path, rows: torch.Tensor | None) -> list[torch.Tensor]:
    """The taps ``f0, f1, ...`` of a cache entry (rows ``rows`` only), one tap at a time. Entries
    of older versions also hold the inputs ``x``; they are not read."""
    from safetensors import safe_open

    out = []
    with safe_open(str(path), framework="pt") as f:
        n_taps = len([k for k in f.keys() if k.startswith("f")])
        for i in range(n_taps):
            t = f.get_tensor(f"f{i}")
            out.append(t if rows is None else t[rows])
    return out


def _compute(teacher: Teacher, images: ImageSet, size: int, batch_size: int,
             device: torch.device | str, progress: bool, desc: str) -> list[torch.Tensor]:
    teacher = teacher.to(device)
    n = len(images)
    feats: list[torch.Tensor] | None = None
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
    for idx, x, _ in iter_batches(images, teacher_batch_size(batch_size, size), size):
        out = teacher(x.to(device))
        if feats is None:
            feats = [torch.empty((n, *o.shape[1:]), dtype=torch.float32) for o in out]
        for f, o in zip(feats, out, strict=True):
            f[idx[0]:idx[-1] + 1] = o.float().cpu()
        bar.update(len(idx))
    bar.close()
    if feats is None:
        raise ValueError("teacher_features: no images")
    return feats
