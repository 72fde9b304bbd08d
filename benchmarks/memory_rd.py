"""Peak memory of RD training: `distilad fit` against `distilad bench` (feature cache on) on one
MVTec category. Each command runs in a child process of its own, which reports its peak RSS
(``getrusage``) when the command ends. Writes one JSON into benchmarks/results/.

    python benchmarks/memory_rd.py [--data DIR] [--epochs 1] [--threads 1]

Memory does not depend on the number of epochs (features are computed once), so one epoch is
enough; the bench child uses an empty, temporary feature cache so that it pays the teacher pass.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distilad.bench.record import environment, portable_path, write_json_atomic
from distilad.cli import demo_data_path


def child_peak_mb(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``argv`` (a distilad command line) in a fresh child process that reports its own peak
    RSS when the command ends; returns (peak RSS MiB, seconds)."""
    code = ("import sys, resource; from distilad.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *argv], env=env, check=True,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_kib = next(int(line.split()[1]) for line in out.stdout.splitlines()
                    if line.startswith("PEAK"))
    return peak_kib / 1024.0, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(demo_data_path()), help="MVTec-style category folder")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    data = Path(args.data)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        fit_mb, fit_s = child_peak_mb(
            ["fit", "rd", str(data), "-o", f"{tmp}/m.distilad", "--epochs", str(args.epochs),
             "-q"], env)
        bench_mb, bench_s = child_peak_mb(
            ["bench", "--dataset", "mvtec", "--classes", data.name, "--data-root",
             str(data.parent.parent if data.parent.name == "mvtec_ad" else data.parent),
             "--set", f"epochs={args.epochs}", "--results", f"{tmp}/results", "--no-markdown",
             "--feature-cache", f"{tmp}/cache", "--allow-dirty", "-q"], env)
    record = {
        "kind": "memory_rd",
        "category": data.name,
        "data": portable_path(data),
        "epochs": args.epochs,
        "threads": args.threads,
        "fit_peak_rss_mb": round(fit_mb, 1),
        "bench_peak_rss_mb": round(bench_mb, 1),
        "fit_seconds": round(fit_s, 1),
        "bench_seconds": round(bench_s, 1),
        "note": "peak RSS of each command in its own child process (getrusage); bench with an "
                "empty feature cache; resource peaks do not depend on other load",
        **environment("cpu"),
    }
    out = Path(args.results) / f"memory_rd_{data.name}_e{args.epochs}.json"
    write_json_atomic(out, record)
    print(f"fit {fit_mb:.0f} MB, bench {bench_mb:.0f} MB -> {out}")


if __name__ == "__main__":
    main()
