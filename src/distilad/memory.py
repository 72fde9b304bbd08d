"""How much host memory a cache may take: ``max_cached_mb="auto"``.

A method that can keep intermediate tensors in RAM instead of recomputing them (Transformaly's
teacher block boundaries) asks :func:`cache_budget_bytes`. ``"auto"`` grants a share of the memory
the operating system reports as available *at that moment* (Linux ``MemAvailable``: free memory
plus what the page cache can give back), so a big machine keeps a 9-class training set's
boundaries in memory while a small one recomputes them; a second process started beside the first
sees what the first has already taken.
"""

from __future__ import annotations

import os
from pathlib import Path

#: share of the available memory "auto" grants. A set's tensors are the only copy in memory
#: (cache entries are streamed to disk and a subset reads only its own rows back), and the rest of
#: a fit took 0.8 GB beside 11.2 GB of them (peak RSS, multimodal Fashion-MNIST at 128 px): 0.6
#: leaves the other 40 % for that, the page cache and a second process.
AUTO_SHARE = 0.6
#: budget where the available memory cannot be read (not Linux, no sysconf), in bytes.
FALLBACK_BYTES = 2048e6


def available_bytes() -> int | None:
    """Memory the system can give a process now, in bytes; None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def cache_budget_bytes(max_cached_mb: float | str) -> float:
    """Bytes a cache may hold: ``max_cached_mb`` MB (10^6 bytes), or for ``"auto"``
    :data:`AUTO_SHARE` of :func:`available_bytes` (:data:`FALLBACK_BYTES` where unknown)."""
    if max_cached_mb == "auto":
        avail = available_bytes()
        return FALLBACK_BYTES if avail is None else AUTO_SHARE * avail
    return float(max_cached_mb) * 1e6
