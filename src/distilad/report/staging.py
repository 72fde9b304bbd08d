"""Output folders that appear complete or not at all.

Commands write into a hidden temporary folder beside the target (same file system, so the final
rename is atomic) and move it into place only when everything was written. An error or Ctrl-C
removes the temporary folder and leaves the target as it was; with ``overwrite`` the old folder
is replaced as a whole (nothing of an earlier run survives) and only after the new one is
complete, so a failed run never destroys earlier results.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from distilad.errors import DistiladError


def check_output_folder(target: Path, overwrite: bool,
                        keep: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Refuse, before any work, a target that is a file or a non-empty folder (unless
    ``overwrite``), or one that is or holds the current folder or any path in ``keep`` (the
    command's inputs), which replacing it would delete."""
    resolved = target.resolve()
    for p in [Path.cwd(), *map(Path, keep)]:
        q = p.resolve()
        if q == resolved or resolved in q.parents:
            what = "the current folder" if p == Path.cwd() else f"the input {p}"
            raise DistiladError(f"output folder {target} is or holds {what}; replacing it would "
                                "delete that, so choose another output folder")
    if target.exists() and not target.is_dir():
        raise DistiladError(f"output {target} exists and is not a folder; choose another path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise DistiladError(f"output folder {target} is not empty; choose another or pass "
                            "--overwrite (which replaces the whole folder)")


class StagedFolder:
    """Context manager: ``with StagedFolder(target, overwrite) as tmp:`` write into ``tmp``.

    Constructing it checks the target (:func:`check_output_folder`, with ``keep`` the paths
    it must not delete); entering creates the
    temporary folder (with the permissions the umask gives, like ``mkdir``), which also proves
    the location writable before any work. On a clean exit the temporary folder becomes
    ``target``; on an exception (KeyboardInterrupt included) it is deleted, together with any
    parent folders that entering created, and the exception propagates.
    """

    def __init__(self, target: str | os.PathLike[str], overwrite: bool = False,
                 keep: Sequence[str | os.PathLike[str]] = ()):
        self.target = Path(target)
        self.overwrite = overwrite
        check_output_folder(self.target, overwrite, keep)
        self.tmp: Path | None = None
        self._created_parents: list[Path] = []

    def __enter__(self) -> Path:
        parent = self.target.parent
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._created_parents = missing  # deepest first
            tmp = parent / f".{self.target.name}.partial-{os.getpid()}-{secrets.token_hex(3)}"
            tmp.mkdir()
        except OSError as e:
            self._remove_created_parents()
            raise DistiladError(f"cannot write the output {self.target}: {e.strerror or e}") from e
        self.tmp = tmp
        return tmp

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self._remove_created_parents()
            return False
        self._commit(self.tmp)
        return False

    def _commit(self, tmp: Path) -> None:
        target = self.target
        if not target.exists():
            os.rename(tmp, target)
            return
        # something may have appeared while we worked: keep the complete results, say where
        if not target.is_dir() or (any(target.iterdir()) and not self.overwrite):
            raise DistiladError(f"{target} was created by something else while this command ran; "
                                f"the results are in {tmp}")
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(3)}")
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def _remove_created_parents(self) -> None:
        for p in self._created_parents:
            try:
                p.rmdir()
            except OSError:
                break
