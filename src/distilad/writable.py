"""Checks, before any work, that an output location can be written.

A command that trains for minutes and then cannot save has wasted those minutes: these checks
run first. The test is real (a probe file is created and removed in the nearest existing
folder), so it also catches read-only mounts and ACLs that permission bits do not show.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from distilad.errors import DistiladError


def check_file_target(path: str | os.PathLike, overwrite: bool, what: str = "output",
                      example: str = "model.distilad") -> Path:
    """A file that will be written at ``path``: not a folder, not existing unless ``overwrite``,
    and its folder existing (or creatable) and writable. Returns ``Path(path)``."""
    p = Path(path)
    if p.is_dir():
        raise DistiladError(f"{what} {p} is a folder; give a file name, e.g. {p / example}")
    if p.exists() and not overwrite:
        raise DistiladError(f"{what} {p} exists; choose another path or pass --overwrite")
    _check_can_create_in(p.parent, what, p)
    return p


def check_folder_target(path: str | os.PathLike, what: str = "output folder") -> Path:
    """A folder that files will be written into: not a file, and existing (or creatable) and
    writable. Returns ``Path(path)``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DistiladError(f"{what} {p} exists and is not a folder; choose another path")
    _check_can_create_in(p, what, p)
    return p


def _check_can_create_in(folder: Path, what: str, target: Path) -> None:
    """The nearest existing folder of ``folder`` (itself or an ancestor) accepts a new file."""
    existing = folder if str(folder) else Path(".")
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise DistiladError(f"cannot write {what} {target}: {existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".distilad-write-test-", dir=existing)
    except OSError as e:
        raise DistiladError(f"cannot write {what} {target}: {existing} is not writable "
                            f"({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
