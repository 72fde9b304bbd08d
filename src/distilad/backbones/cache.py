"""Teacher features computed once and reused.

``teacher_features`` runs a frozen teacher over an ImageSet and returns its maps. With a cache
folder, the result is stored under a key made of the teacher (name + weights fingerprint), the
preprocessing (size, channels) and the data (the ImageSet's fingerprint), so a sweep over classes
and seeds pays for the teacher once per dataset.

Entries are written batch by batch straight into a temporary file (:class:`EntryWriter`), then
renamed into place: an interrupted run never leaves a half-written entry, and the set the entry
holds never has to fit in memory. Subsets (seeded hold-out splits, a multimodal protocol's
classes) are served from their root set's entry, made first when missing: only their rows are
read back (:func:`read_rows`), so the memory a subset costs is its own features alone.

Memory: only the features are kept, never the preprocessed input images (an earlier version
cached and returned those too, which on a 700-image 256 px category more than doubled the peak).
The teacher's batch is capped at :data:`MAX_BATCH_PIXELS` input pixels, so a large score batch at
256 px cannot multiply the activation memory.

One-off sets (synthetic defects and validation samples, made anew for every run) say so with
``reuse_features = False`` and are computed without touching the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from distilad.backbones.base import Teacher
from distilad.data.base import ImageSet, SubsetImageSet
from distilad.data.transforms import iter_batches
from distilad.errors import CacheWarning
from distilad.processes import running

#: at most this many input pixels per teacher batch: 16 images at 256 px (as ``fit`` scores),
#: 256 at 64 px. Measured on CPU (efficientnet_lite1, 256 px, 83 images): the teacher's
#: activations raise the peak by 0.46 GB at batch 16 and 1.4 GB at batch 64 (by extrapolation
#: ~5 GB at the batch of 256 that scoring through the cache asks for).
MAX_BATCH_PIXELS = 16 * 256 * 256
#: free space, in bytes, a new cache entry must leave on its disk
DISK_HEADROOM = 1e9
#: a temporary entry file untouched this long (seconds) belongs to a writer that died (a live
#: one writes a batch every few seconds, a minute at the slowest teacher here)
STALE_TEMP_SECONDS = 3600

#: an entry's rows batch by batch: (first row, rows in the whole entry, {name: (b, ...) rows})
RowBatches = Iterator[tuple[int, int, dict[str, torch.Tensor]]]
#: a teacher pass on a batch of inputs (b, C, S, S): its named outputs, float32 on the CPU
Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]


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
    teacher = teacher.to(device)

    def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"f{i}": o.float().cpu() for i, o in enumerate(teacher(x.to(device)))}

    feats = cached_features(images, size, teacher_batch_size(batch_size, size), forward,
                            lambda root: cache_key(teacher, root, size), cache_dir,
                            lambda name: name.startswith("f"), progress, desc)
    return [feats[f"f{i}"] for i in range(len(feats))]


def cached_features(images: ImageSet, size: int, batch_size: int, forward: Forward,
                    key: Callable[[ImageSet], str], cache_dir: str | Path | None,
                    wanted: Callable[[str], bool], progress: bool, desc: str
                    ) -> dict[str, torch.Tensor]:
    """``forward``'s named outputs for every image of ``images`` (``{name: (N, ...)}``), the
    route both feature caches take. Without ``cache_dir`` (or for a one-off set) they are
    computed in memory. Else the entry ``<cache_dir>/<key(root)>.safetensors`` of the set at the
    bottom of ``images``' chain of subsets is read (the ``wanted`` tensors, ``images``' rows
    only); a missing entry is made first, streamed to disk batch by batch; where it cannot be
    written (no space, read-only folder: a :class:`CacheWarning`) the features are computed in
    memory for ``images`` alone."""
    def batches(of: ImageSet) -> RowBatches:
        return _row_batches(of, batch_size, size, forward, progress, desc)

    if cache_dir is None or not getattr(images, "reuse_features", True):
        return collect(batches(images))
    root, rows = root_and_rows(images)
    path = Path(cache_dir) / f"{key(root)}.safetensors"
    cached = read_entry(path, rows, wanted)
    if cached is None and stream_entry(path, batches(root)):
        cached = read_entry(path, rows, wanted)
    return cached if cached is not None else collect(batches(images))


def root_and_rows(images: ImageSet) -> tuple[ImageSet, torch.Tensor | None]:
    """(the set at the bottom of a chain of subsets, the rows of ``images`` in it or None): the
    set whose cache entry serves ``images``, and where in that entry ``images`` lie."""
    rows = None
    while isinstance(images, SubsetImageSet):
        idx = np.asarray(images.indices, dtype=np.int64)
        rows = idx if rows is None else idx[rows]
        images = images.parent
    return images, None if rows is None else torch.as_tensor(rows, dtype=torch.long)


def read_entry(path: Path, rows: torch.Tensor | None, wanted: Callable[[str], bool]
               ) -> dict[str, torch.Tensor] | None:
    """:func:`read_named_rows` of a cache entry; None when there is none, or when it is damaged
    (it is then deleted, to be recomputed and written again)."""
    if not path.is_file():
        return None
    try:
        return read_named_rows(path, rows, wanted)
    except Exception:
        path.unlink(missing_ok=True)
        return None


#: safetensors dtype names -> torch dtypes (the ones a cache entry can hold), and back
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


class EntryWriter:
    """A safetensors file written part by part: the header (every tensor's name, shape, dtype
    and place) first, then rows in any order, into ``<path>.<host>.<pid>.tmp``; :meth:`commit`
    renames it to ``path``, :meth:`abort` deletes it. Readable by ``safetensors`` like ``save_file``'s
    output (header padded to 8 bytes, wider dtypes first)."""

    def __init__(self, path: Path, specs: dict[str, tuple[tuple[int, ...], torch.dtype]]):
        header: dict[str, dict] = {}
        offset = 0
        # larger items first (as safetensors' own writer): every tensor stays aligned
        for name in sorted(specs, key=lambda k: (-_nbytes((), specs[k][1]), k)):
            shape, dtype = specs[name]
            nbytes = _nbytes(shape, dtype)
            header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self.path = path
        self._header, self._data_start = header, 8 + len(text)
        self._tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
        self._f = open(self._tmp, "wb")  # noqa: SIM115 (closed by commit / abort)
        try:
            self._f.write(struct.pack("<Q", len(text)) + text)
            self._f.truncate(self._data_start + offset)
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, first_row: int, rows: torch.Tensor) -> None:
        """Rows ``first_row ..`` of tensor ``name`` (their shape past dim 0 and dtype as
        declared)."""
        meta = self._header[name]
        if list(rows.shape[1:]) != meta["shape"][1:] or _DTYPE_NAMES[rows.dtype] != meta["dtype"]:
            raise ValueError(f"{name}: rows {tuple(rows.shape)} {rows.dtype} do not match "
                             f"{meta['shape']} {meta['dtype']}")
        row_bytes = (meta["data_offsets"][1] - meta["data_offsets"][0]) // max(meta["shape"][0], 1)
        self._f.seek(self._data_start + meta["data_offsets"][0] + first_row * row_bytes)
        self._f.write(memoryview(rows.detach().cpu().contiguous().reshape(-1)
                                 .view(torch.uint8).numpy()))

    def commit(self) -> None:
        self._f.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> None:
    """Delete the temporary files of entry ``path`` left by writers killed before they could
    commit or abort (a sweep stopped with SIGKILL leaves one as large as the entry): those whose
    process no longer runs on this machine, and any untouched for :data:`STALE_TEMP_SECONDS`
    (a writer on another machine sharing the folder)."""
    host = socket.gethostname()
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        owner, _, pid = tmp.name[len(path.name) + 1:-len(".tmp")].rpartition(".")
        try:
            dead = owner == host and pid.isdigit() and not running(int(pid))
            if dead or time.time() - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                tmp.unlink()
        except OSError:  # gone meanwhile, or not ours to delete: leave it
            pass


def stream_entry(path: Path, batches: RowBatches) -> bool:
    """Write the entry ``path`` from ``batches`` (together covering every row), never holding
    more than a batch. The first batch fixes the shapes; an entry that would leave less than
    :data:`DISK_HEADROOM` bytes free, or whose write fails, is not written: a
    :class:`CacheWarning` says so and False is returned (the batches are then not run further).
    Returns whether the entry was written."""
    writer: EntryWriter | None = None
    try:
        for first, n, parts in batches:
            if writer is None:
                specs = {k: ((n, *t.shape[1:]), t.dtype) for k, t in parts.items()}
                needed = sum(_nbytes(shape, dtype) for shape, dtype in specs.values())
                path.parent.mkdir(parents=True, exist_ok=True)
                remove_stale_temps(path)  # before measuring the room they take
                free = shutil.disk_usage(path.parent).free
                if needed + DISK_HEADROOM > free:
                    warnings.warn(f"feature cache: not written, the entry needs "
                                  f"{needed / 1e9:.1f} GB and {path.parent} has "
                                  f"{free / 1e9:.1f} GB free (keeping "
                                  f"{DISK_HEADROOM / 1e9:.0f} GB); the run goes on without it",
                                  CacheWarning, stacklevel=3)
                    return False
                writer = EntryWriter(path, specs)
            for k, t in parts.items():
                writer.write(k, first, t)
        if writer is None:
            return False
        writer.commit()
        writer = None
        return True
    except OSError as e:
        warnings.warn(f"feature cache: not written ({e}); the run goes on without it",
                      CacheWarning, stacklevel=3)
        return False
    finally:
        if writer is not None:
            writer.abort()


#: at most this many bytes are read per ``readinto`` when gathering rows
_READ_CHUNK = 64 << 20


def _header(path: Path) -> tuple[dict, int]:
    """(the safetensors header, the byte offset of the data section)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def entry_names(path: Path) -> list[str]:
    """The tensor names stored in the safetensors file ``path``."""
    return [k for k in _header(path)[0] if k != "__metadata__"]


def read_rows(path: Path, name: str, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``rows`` (a 1-D index tensor, any order, repeats allowed) of the tensor ``name`` of
    the safetensors file ``path``, read straight from disk into one tensor of shape
    ``(len(rows), *shape[1:])``; the whole tensor when ``rows`` is None.

    Unlike loading the tensor and indexing it, the memory used is the result's alone: a hold-out
    subset of 90 % of a 13 GB entry costs 90 % of it, not 190 % of its largest tap. Runs of
    consecutive rows are read with one ``readinto`` each (at most 64 MB at a time)."""
    header, data_start = _header(path)
    if name not in header:
        raise KeyError(f"{path.name}: no tensor {name!r}")
    return _read_tensor_rows(path, name, header[name], data_start, rows)


def read_named_rows(path: Path, rows: torch.Tensor | None,
                    wanted: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """:func:`read_rows` of every tensor of the entry whose name is ``wanted``, the header read
    once (entries of older versions may hold tensors no longer used, e.g. the inputs ``x``)."""
    header, data_start = _header(path)
    return {name: _read_tensor_rows(path, name, meta, data_start, rows)
            for name, meta in header.items() if name != "__metadata__" and wanted(name)}


def _read_tensor_rows(path: Path, name: str, meta: dict, data_start: int,
                      rows: torch.Tensor | None) -> torch.Tensor:
    """Rows ``rows`` of the tensor described by header entry ``meta`` (see :func:`read_rows`)."""
    shape = list(meta["shape"])
    if not shape:
        raise ValueError(f"{path.name}:{name}: a scalar has no rows")
    begin, end = meta["data_offsets"]
    n = shape[0]
    row_bytes = (end - begin) // max(n, 1)
    idx = (np.arange(n, dtype=np.int64) if rows is None
           else np.asarray(rows, dtype=np.int64).reshape(-1))
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{path.name}:{name}: rows outside 0..{n - 1}")
    out = torch.empty((idx.size, *shape[1:]), dtype=_DTYPES[meta["dtype"]])
    if idx.size == 0 or row_bytes == 0:
        return out
    dest = out.view(torch.uint8).reshape(idx.size, row_bytes).numpy()
    order = np.argsort(idx, kind="stable")  # output position of each sorted row
    src = idx[order]
    runs = np.split(np.arange(src.size), np.flatnonzero(np.diff(src) != 1) + 1)
    per_read = max(1, _READ_CHUNK // row_bytes)
    with open(path, "rb", buffering=0) as f:
        for run in runs:  # consecutive rows on disk (a repeated row starts a new run)
            for lo in range(0, run.size, per_read):
                part = run[lo:lo + per_read]
                f.seek(data_start + begin + int(src[part[0]]) * row_bytes)
                at = order[part]
                if np.all(np.diff(at) == 1):  # landing in consecutive output rows: read in place
                    _read_exact(f, dest[at[0]:at[0] + part.size].reshape(-1))
                else:
                    buf = np.empty((part.size, row_bytes), dtype=np.uint8)
                    _read_exact(f, buf.reshape(-1))
                    dest[at] = buf
    return out


def _read_exact(f, buf: np.ndarray) -> None:
    """Fill ``buf`` (a contiguous uint8 array) from ``f``; an entry cut short raises OSError."""
    mv = memoryview(buf)
    got = 0
    while got < len(mv):
        k = f.readinto(mv[got:])
        if not k:
            raise OSError("cache entry ends early")
        got += k


def _row_batches(images: ImageSet, batch_size: int, size: int, forward: Forward,
                 progress: bool, desc: str) -> RowBatches:
    """``forward`` over ``images`` batch by batch, as :data:`RowBatches`."""
    if len(images) == 0:
        raise ValueError(f"{desc}: no images")
    bar = tqdm(total=len(images), desc=desc, unit="img", disable=not progress, leave=False)
    for idx, x, _ in iter_batches(images, batch_size, size):
        yield idx[0], len(images), forward(x)
        bar.update(len(idx))
    bar.close()


def collect(batches: RowBatches) -> dict[str, torch.Tensor]:
    """The rows of ``batches`` in tensors allocated once at the first batch and filled in
    place (no concatenation peak)."""
    out: dict[str, torch.Tensor] = {}
    for first, n, parts in batches:
        if not out:
            out = {k: torch.empty((n, *t.shape[1:]), dtype=t.dtype) for k, t in parts.items()}
        for k, t in parts.items():
            out[k][first:first + len(t)] = t
    return out
