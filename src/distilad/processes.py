"""Whether a process still runs: how a lock or a temporary file left by a killed worker is told
apart from one a live worker holds (bench run locks, feature-cache entries being written)."""

from __future__ import annotations

import os


def running(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine. Unknown counts as running: a pid <= 0 (a
    lock file read before its writer filled it in) and any pid on Windows, where
    ``os.kill(pid, 0)`` would interrupt or terminate the process instead of probing it."""
    if pid <= 0 or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True
