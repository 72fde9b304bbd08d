"""distilad.memory: the cache budget from the memory the system reports available."""

from __future__ import annotations

import sys

import pytest

from distilad import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/meminfo")
def test_available_bytes_reads_the_system() -> None:
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    want = int(meminfo["MemAvailable"].split()[0]) * 1024
    got = memory.available_bytes()
    assert got is not None and got > 0
    assert abs(got - want) < 0.2 * want  # read a moment apart


def test_budget_in_megabytes_or_a_share_of_what_is_available(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert memory.cache_budget_bytes(2048.0) == 2048e6
    assert memory.cache_budget_bytes(0) == 0.0
    monkeypatch.setattr(memory, "available_bytes", lambda: 8_000_000_000)
    assert memory.cache_budget_bytes("auto") == pytest.approx(4_800_000_000)
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    assert memory.cache_budget_bytes("auto") == memory.FALLBACK_BYTES
