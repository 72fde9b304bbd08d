"""Load test of the inspection server: concurrent clients against `distilad serve` on localhost.
Writes one JSON into benchmarks/results/.

    python benchmarks/load_serve.py [--model M.distilad] [--clients 4] [--requests 200]
                                    [--threads 2] [--overlay]

Without ``--model`` it trains RD for one epoch on 60 bottle images (as ``speed_export.py``: the
weights' values do not change the speed) and saves it in a temporary folder. The server runs as
``distilad serve MODEL -p 0 --threads T -q`` in a process of its own. Each client is a thread
with one keep-alive HTTP connection that posts the bottle test images in turn (multipart, as
``curl -F file=@...``), one request at a time, ``--requests`` times; so at most ``--clients``
requests are in flight (a bounded loop). Before the run a single client sends every image once:
its scores are the reference that each answer under load must equal (else it counts as wrong),
and its latencies the one-client baseline.

Recorded: requests answered 200 / lost (no answer, an error status or a wrong score: must be 0),
throughput (answered requests / wall seconds), client-side latency percentiles, the server's own
split (wait for the model, scoring) from ``timing_ms``, and the server's resident memory after
the warm-up, after a quarter, half and three quarters of the requests, at the end and at its
highest (sampled every 0.2 s), to show that it stays flat.
Other processes on the machine make the timings indicative (the load average is recorded).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from distilad.bench.record import environment, write_json_atomic
from distilad.cli import demo_data_path


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request with ``data`` as field 'file'."""
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive connection; ``post`` returns (HTTP status or None, JSON or None, seconds)."""

    def __init__(self, host: str, port: int, path: str):
        self.host, self.port, self.path = host, port, path
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, content_type: str) -> tuple[int | None, Any, float]:
        t0 = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            self.conn.request("POST", self.path, body=body, headers={"Content-Type": content_type})
            resp = self.conn.getresponse()
            payload = json.loads(resp.read())
            return resp.status, payload, time.perf_counter() - t0
        except (OSError, http.client.HTTPException, json.JSONDecodeError):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None, None, time.perf_counter() - t0


def start_server(model: Path, threads: int) -> tuple[subprocess.Popen, str, int]:
    """`distilad serve MODEL -p 0` in a new process; (process, host, port) once it answers."""
    cmd = [sys.executable, "-m", "distilad.cli", "serve", str(model), "-p", "0", "--threads",
           str(threads), "--device", "cpu", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"http://([\d.]+):(\d+)/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    host, port = match.group(1), int(match.group(2))
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, host, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not answer /health")


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "mean": float(ms.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="served model file (default: RD trained for this run)")
    ap.add_argument("--backbone", default="efficientnet_lite1", help="teacher of the trained RD")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--train-images", type=int, default=60)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=200, help="requests per client")
    ap.add_argument("--threads", type=int, default=2, help="the server's scoring threads")
    ap.add_argument("--overlay", action="store_true", help="ask for the overlay PNG too")
    ap.add_argument("--data", default=str(demo_data_path()))
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    images = sorted((Path(args.data) / "test").glob("*/*.*"))
    if not images:
        raise SystemExit(f"no test images under {args.data}/test")
    bodies = [multipart(p.name, p.read_bytes()) for p in images]

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model = Path(args.model)
            model_name = model.name
        else:
            import torch

            import distilad
            from distilad.data import mvtec_train

            torch.set_num_threads(args.threads)
            det = distilad.create_detector("rd", backbone=args.backbone, image_size=args.image_size,
                                           epochs=1, progress=False, device="cpu")
            train = mvtec_train(args.data)
            det.fit(train.subset(range(min(args.train_images, len(train)))), validation=None)
            model = det.save(Path(tmp) / "rd.distilad")
            model_name = f"rd {args.backbone} {args.image_size}px (1 epoch, {args.train_images} images)"
        proc, host, port = start_server(model, args.threads)
        try:
            record = run_load(args, proc.pid, host, port, bodies, model_name)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    name = (f"load_serve_{'model' if args.model else f'rd_{args.backbone}_{args.image_size}'}"
            f"_c{args.clients}x{args.requests}_t{args.threads}{'_overlay' if args.overlay else ''}.json")
    write_json_atomic(Path(args.results) / name, record)
    print(json.dumps({k: record[k] for k in ("throughput_rps", "latency_ms", "lost", "wrong_score",
                                             "server_rss_mb")}, indent=1))


def run_load(args: argparse.Namespace, pid: int, host: str, port: int,
             bodies: list[tuple[bytes, str]], model_name: str) -> dict[str, Any]:
    path = "/predict?overlay=true" if args.overlay else "/predict"
    # reference pass: one client, every image once (also the warm-up)
    ref_client = Client(host, port, path)
    reference, single = [], []
    for body, ctype in bodies:
        status, payload, seconds = ref_client.post(body, ctype)
        if status != 200:
            raise SystemExit(f"reference request failed: {status} {payload}")
        reference.append(payload["score"])
        single.append(seconds)
    rss_before = rss_mb(pid)
    samples = [(0, rss_before)]  # (requests answered so far, server RSS MB)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            samples.append((sum(len(r) for r in results), rss_mb(pid)))

    results: list[list[tuple[int | None, float, bool, dict]]] = [[] for _ in range(args.clients)]

    def client(k: int) -> None:
        c = Client(host, port, path)
        for i in range(args.requests):
            j = (k * 7 + i) % len(bodies)  # clients start at different images
            status, payload, seconds = c.post(*bodies[j])
            right = status == 200 and payload.get("score") == reference[j]
            results[k].append((status, seconds, right, payload.get("timing_ms", {})
                               if isinstance(payload, dict) else {}))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    load_before = os.getloadavg()
    workers = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    stop.set()
    sampler.join()
    rss_after = rss_mb(pid)
    sent = args.clients * args.requests
    by_progress = {f"{q}%": next((m for n, m in samples if n >= q * sent / 100), rss_after)
                   for q in (25, 50, 75)}
    flat = [r for rs in results for r in rs]
    ok = [r for r in flat if r[0] == 200]
    statuses: dict[str, int] = {}
    for r in flat:
        statuses[str(r[0])] = statuses.get(str(r[0]), 0) + 1
    server_ms = {key: statistics.median(r[3][key] for r in ok) for key in ("wait", "score", "total")}
    return {
        "kind": "load_serve",
        "model": model_name,
        "method": "rd",
        "endpoint": path,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "requests_sent": sent,
        "answered_200": len(ok),
        "lost": sent - len(ok),
        "wrong_score": sum(1 for r in ok if not r[2]),
        "statuses": statuses,
        "wall_seconds": round(wall, 2),
        "throughput_rps": len(ok) / wall,
        "latency_ms": percentiles([r[1] for r in ok]),
        "single_client_latency_ms": percentiles(single),
        "server_timing_median_ms": server_ms,
        "server_threads": args.threads,
        "server_rss_mb": {"after_warmup": round(rss_before, 1), "end": round(rss_after, 1),
                          "max": round(max(m for _, m in samples + [(0, rss_after)]), 1),
                          "growth": round(rss_after - rss_before, 1),
                          "at_progress": {k: round(v, 1) for k, v in by_progress.items()}},
        "images": len(bodies),
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "note": "indicative: other processes shared this machine's CPUs during the run",
        **environment("cpu"),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


if __name__ == "__main__":
    main()
