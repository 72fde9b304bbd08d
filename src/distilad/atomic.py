"""Files that appear whole or not at all.

Every file the library writes for later reading (a model, an ONNX export, a bench record, a
cached teacher or dataset, RESULTS.md) is written under a temporary name in the target's folder
and renamed into place: a reader (another process, a resumed bench) sees the old file or the new
one, never half a file, and an interrupted write leaves the old file as it was. The streamed
teacher-feature cache (``backbones/cache.py``) keeps its own writer, since it is written batch by
batch and cleans up the temporary files of killed writers.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, the file
    written there replaces ``path`` (with an ordinary file's permissions, as ``open`` makes them);
    otherwise it is deleted and ``path`` is untouched. Creates the parent folder.

    The temporary name, ``.<name>.<pid>.<random>.tmp``, is hidden and unique per call, so two
    writers (processes or threads) of one target never share it; the last rename wins.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``Path(path).write_text(text)`` (UTF-8), whole or not at all. Returns ``Path(path)``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
