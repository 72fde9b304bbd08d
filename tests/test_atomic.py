"""Whole-or-nothing file writes (distilad.atomic)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from distilad.atomic import atomic_path, umask, write_text_atomic


def test_write_creates_parent_and_ordinary_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    assert write_text_atomic(target, "héllo\n") == target
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask()
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temp left


def test_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_temp_is_hidden_beside_target_and_unique(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a.parent == b.parent == tmp_path and a != b
        assert a.name.startswith(".r.json.") and a.name.endswith(".tmp")
        assert f".{os.getpid()}." in a.name
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # the last block to end wins (b ended first, then a)


def test_concurrent_writers_never_show_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "shared.txt"
    texts = [str(i) * 100_000 for i in range(4)]
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if target.exists():
                seen.append(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write_text_atomic, args=(target, t)) for t in texts * 5]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    assert target.read_text() in texts
    assert all(s in texts for s in seen)
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]
