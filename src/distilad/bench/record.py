"""One JSON file per benchmark run: what ran, on what, with which code, and what came out.

Portable records: paths in a record never carry this machine's absolute paths. The rule
(:func:`portable_path`, applied to every argument of the recorded ``command`` (also the value
of ``--opt=/path`` and ``KEY=/path``), to ``data`` and to cache folders) is: a path under
``$DISTILAD_DATA`` is written ``$DISTILAD_DATA/<rest>``; else a path under the current folder
is written relative to it; else a path under the home folder is written ``~/<rest>``; else a
path beside the current folder is written ``../<rest>`` (e.g. ``../shared/data`` beside a
checkout); anything further away is written ``.../<last two parts>``, which names it without
the machine's layout. Relative paths and other arguments stay as given.

The code version is read once when a sweep starts (:func:`code_version`), not when a file is
written, so every run of a sweep records the commit that produced it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distilad.atomic import write_text_atomic

#: tracked files whose changes do not change results: the results themselves and documentation
_NOT_CODE = (":(top,exclude)benchmarks/results", ":(top,exclude,glob)**/*.md")


def code_version(cwd: str | Path | None = None) -> tuple[str, list[str]]:
    """(commit of the checkout holding this code, or ``unknown`` outside one; the tracked files
    with uncommitted changes, leaving out ``benchmarks/results`` and ``*.md``).

    Outside a git checkout (e.g. a copy of a clean tree sent to a GPU machine) the commit is
    ``$DISTILAD_COMMIT`` when set, which whoever made the copy vouches for."""
    here = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return os.environ.get("DISTILAD_COMMIT", "").strip() or "unknown", []
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                 ":/", *_NOT_CODE], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout
        return sha, [line[3:] for line in status.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("DISTILAD_COMMIT", "").strip() or "unknown", []


def git_commit(cwd: str | Path | None = None) -> str:
    """Current commit (with ``-dirty`` when tracked code has changes), or ``unknown``."""
    sha, changed = code_version(cwd)
    return sha + ("-dirty" if changed else "") if sha != "unknown" else sha


def portable_path(path: str | Path, cwd: str | Path | None = None) -> str:
    """``path`` written without this machine's absolute paths (see the module doc)."""
    text = str(path)
    if not os.path.isabs(text):
        return text
    p = Path(os.path.normpath(text))
    here = Path(os.path.abspath(cwd or os.getcwd()))
    data = os.environ.get("DISTILAD_DATA", "").strip()
    if data and os.path.isabs(data):
        rest = _relative_to(p, Path(os.path.normpath(data)))
        if rest is not None:
            return "$DISTILAD_DATA" + ("" if rest == "." else f"/{rest}")
    rest = _relative_to(p, here)
    if rest is not None:
        return rest
    rest = _relative_to(p, Path.home())
    if rest is not None:
        return "~" + ("" if rest == "." else f"/{rest}")
    rest = _relative_to(p, here.parent)
    if rest is not None:
        return "../" + rest if rest != "." else ".."
    return ".../" + "/".join(p.parts[-2:])


def _relative_to(p: Path, base: Path) -> str | None:
    try:
        return p.relative_to(base).as_posix() or "."
    except ValueError:
        return None


def portable_command(argv: list[str], cwd: str | Path | None = None) -> str:
    """The command line ``argv`` as one string, program by name only, paths portable."""
    out = [Path(argv[0]).name] if argv else []
    for arg in argv[1:]:
        if "=" in arg and not os.path.isabs(arg):  # --opt=PATH, --set KEY=PATH or KEY="PATH"
            key, value = arg.split("=", 1)
            quote = '"' if len(value) > 1 and value[0] == value[-1] == '"' else ""
            inner = value[1:-1] if quote else value
            out.append(f"{key}={quote}{portable_path(inner, cwd)}{quote}")
        else:
            out.append(portable_path(arg, cwd))
    return " ".join(out)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def median_seconds_paired(fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int
                          ) -> tuple[float, float]:
    """Median wall times (s) of ``fn_a()`` and ``fn_b()`` over ``repeats`` alternating calls
    each, after one warm-up of both: a ratio of the two is not skewed by when each ran."""
    fn_a()
    fn_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / (1024.0 * 1024.0)


def environment(device: str, commit: str | None = None) -> dict[str, Any]:
    """Library, torch and machine facts for a result file; ``commit`` as read at the start of
    the sweep (read now when not given)."""
    import torch

    import distilad

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {
        "distilad_version": distilad.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": commit if commit is not None else git_commit(),
        "command": portable_command(sys.argv),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON to a temp file, then rename: an interrupted write never leaves half a file."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_default, allow_nan=True)
                             + "\n")


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A result file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def record_metric(record: dict[str, Any], key: str, part: str = "metrics") -> float:
    """Metric ``key`` of a run record: from its test ``"metrics"`` or, with
    ``part="validation"``, from its validation block; NaN where the run has none."""
    block = record.get(part) or {}
    if part == "validation":
        block = block.get("metrics") or {}
    return float(block.get(key, math.nan))


def _default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, tuple)):
        return str(o) if isinstance(o, Path) else list(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def mean_std_text(values: list[float | None], scale: float = 100.0, digits: int = 2,
                  signed: bool = False) -> str:
    """``mean ± std`` (sample std) of the finite ``values`` x ``scale`` for a markdown table;
    one value alone without ``±``; ``-`` when none is finite. ``signed``: the mean's sign always
    shown (``+0.55 ± 0.35``), for paired differences."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return "-"
    mean = f"{scale * np.mean(v):{'+' if signed else ''}.{digits}f}"
    return mean if len(v) == 1 else f"{mean} ± {scale * np.std(v, ddof=1):.{digits}f}"


def write_speed_record(path: str | Path, *, model: str, method: str, dataset: str,
                       category: str, speed: dict[str, Any], threads: int, commit: str
                       ) -> dict[str, Any]:
    """Write the ``kind: speed`` record of a speed script (``benchmarks/speed_*.py``: RESULTS.md
    "Speed and memory") with the environment, peak RSS so far and ``commit`` (read when the
    script started), print its figures one per line, and return it."""
    record = {"kind": "speed", "model": model, "method": method, "dataset": dataset,
              "category": category, "speed": speed, "peak_rss_mb": round(peak_rss_mb(), 1),
              **environment("cpu", commit), "torch_threads": threads,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json_atomic(path, record)
    for k, v in speed.items():
        print(f"{k:32s} {v:.3f}" if isinstance(v, float) else f"{k:32s} {v}")
    return record


#: parameters that change how a run computes, never what it trains or scores: left out when runs
#: are compared or paired
RUN_ONLY_PARAMS = frozenset({"feature_cache", "teacher_cache", "progress", "score_batch_size",
                             "device", "seed", "max_cached_mb"})


def seed_means(recs: list[dict[str, Any]], seeds: list[int], n_classes: int,
                value: Any) -> list[float]:
    """Per seed with every class present: the mean over classes of ``value(record)`` (NaN-free
    classes only); one value per such seed (format with ``mean_std_text``)."""
    out = []
    for s in seeds:
        vals = [value(r) for r in recs if r["seed"] == s]
        if len(vals) == n_classes and not all(math.isnan(v) for v in vals):
            out.append(float(np.nanmean(vals)))
    return out
