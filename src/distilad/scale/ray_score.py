"""Batch scoring of a large image collection with Ray Data (``pip install 'distilad[scale]'``).

    python -m distilad.scale.ray_score bottle.distilad /data/images -o scores/       # this machine
    python -m distilad.scale.ray_score bottle.distilad /shared/images -o /shared/scores \\
        --address auto --workers 16                                                   # a cluster

The image files (folders expanded as ``distilad predict`` does) become a Ray Dataset of paths;
``map_batches`` sends batches of paths to a pool of actors (:class:`ScoreBatch`), each of which
loads the model once (a ``.distilad`` file, or an exported ``.onnx`` run by onnxruntime) and
scores its batches with the model's own reader and preprocessing, so the numbers are those of
``det.score`` on the same files. The rows (``file``, ``score``, ``normalized_score``,
``label``) are written as Parquet (default) or CSV part files into the output folder, by the
workers, without gathering them on the driver; their order is not that of the inputs.

On a cluster the model file, the images and the output folder must be at the same path on
every node (a shared file system); start Ray on the nodes first (``ray start --head`` /
``ray start --address HEAD:6379``) and pass ``--address auto``. Anomaly maps are not written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from distilad.errors import DistiladError

INSTALL_HINT = "pip install 'distilad[scale]' (ray[data])"
FORMATS = ("parquet", "csv")
COLUMNS = ("file", "score", "normalized_score", "label")


class ScoreBatch:
    """Ray Data actor: loads the model once, then scores each batch ``{"file": paths}`` into
    ``{"file", "score", "normalized_score", "label"}`` (NumPy arrays of the batch's length;
    normalised score and label are NaN / -1 for a model without calibration)."""

    def __init__(self, model: str, device: str = "auto", threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.model = load_model(model, device, threads)
        if hasattr(self.model, "params"):
            self.model.params["progress"] = False

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = [str(f) for f in batch["file"]]
        result = self.model.score(files)
        n = len(files)
        scores = np.asarray(result.image_scores, dtype=np.float64)
        norm = (np.full(n, np.nan) if result.normalized_scores is None
                else np.asarray(result.normalized_scores, dtype=np.float64))
        labels = (np.full(n, -1, np.int64) if result.labels is None
                  else np.asarray(result.labels, dtype=np.int64))
        return {"file": np.asarray(files, dtype=object), "score": scores,
                "normalized_score": norm, "label": labels}


def load_model(path: str, device: str = "auto", threads: int | None = None) -> Any:
    """A ``.onnx`` file (onnxruntime, ``threads`` intra-op threads) or a ``.distilad`` model;
    both score alike."""
    from distilad.onnx_model import OnnxModel, is_onnx_path

    if is_onnx_path(path):
        return OnnxModel(path, device=device, threads=threads)
    import distilad

    return distilad.load_detector(path, device=device)


def score_images(model: str | Path, inputs: list[str | Path], output: str | Path,
                 fmt: str = "parquet", workers: int = 1, batch_size: int = 64,
                 cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                 address: str | None = None, init_kwargs: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Score every image of ``inputs`` (files and folders) with ``model`` on a Ray cluster and
    write the rows into the folder ``output`` (``fmt``: parquet or csv part files).

    ``workers`` actors (each ``cpus_per_worker`` CPUs / torch threads, ``gpus_per_worker`` GPUs)
    get ``batch_size`` paths per call. ``address``: ``None`` starts a local Ray (this machine),
    ``"auto"`` or ``"HOST:PORT"`` joins a running cluster; ``init_kwargs`` go to ``ray.init``
    (when this call starts Ray; it is shut down again at the end). Returns a summary:
    ``{"images", "output", "format", "workers", "seconds"}``."""
    import time

    from distilad.data import image_files

    if fmt not in FORMATS:
        raise DistiladError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if workers < 1 or batch_size < 1 or cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise DistiladError("workers and batch_size must be at least 1, cpus_per_worker above 0 "
                            "and gpus_per_worker at least 0")
    _check_model_file(model)  # a bad model file fails here, in one line, not in every worker
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DistiladError(f"output {out} exists and is not an empty folder; choose another path")
    files = [str(Path(p).resolve()) for p in image_files(list(inputs)).paths]
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, **(init_kwargs or {}))
    try:
        t0 = time.perf_counter()
        ds = ray.data.from_items([{"file": f} for f in files])
        scored = ds.map_batches(
            ScoreBatch, fn_constructor_kwargs={"model": str(Path(model).resolve()),
                                               "device": "cuda" if gpus_per_worker else "cpu",
                                               "threads": max(1, int(cpus_per_worker))},
            # a fixed pool of actors: `compute=` is read by every Ray since 2.9 (`concurrency=`
            # is deprecated from 2.51)
            batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker, batch_format="numpy")
        writer = scored.write_parquet if fmt == "parquet" else scored.write_csv
        writer(str(out.resolve()))
        seconds = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    return {"images": len(files), "output": str(out), "format": fmt, "workers": workers,
            "seconds": round(seconds, 3)}


def read_scores(output: str | Path) -> Any:
    """The rows written by :func:`score_images` as one pandas DataFrame (needs pandas; pyarrow
    for Parquet), sorted by file."""
    import pandas as pd

    out = Path(output)
    parts = sorted(out.glob("*.parquet")) or sorted(out.glob("*.csv"))
    if not parts:
        raise DistiladError(f"no score files (*.parquet, *.csv) in {out}")
    read = pd.read_parquet if parts[0].suffix == ".parquet" else pd.read_csv
    frame = pd.concat([read(p) for p in parts], ignore_index=True)
    return frame.sort_values("file", ignore_index=True)


def _check_model_file(path: str | Path) -> None:
    """The model file exists and (``.distilad``) has a readable description; tensors are not
    loaded."""
    from distilad.detector import read_model_config
    from distilad.errors import ModelFileError
    from distilad.onnx_model import is_onnx_path

    if is_onnx_path(path):
        if not Path(path).is_file():
            raise ModelFileError(f"model file not found: {path}")
        return
    read_model_config(path)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DistiladError(f"Ray scoring needs ray[data], not installed: {INSTALL_HINT}") from None
    return ray


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distilad.scale.ray_score",
        description="Score a large image collection with Ray Data: one model per worker, rows "
        "(file, score, normalized_score, label) written as Parquet or CSV part files.")
    parser.add_argument("model", help="model file (.distilad, or .onnx run by onnxruntime)")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("-o", "--output", required=True, help="folder to create for the part files")
    parser.add_argument("--format", choices=FORMATS, default="parquet", help="(default: parquet)")
    parser.add_argument("--workers", type=int, default=1, help="model actors (default: 1)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per actor call (default: 64)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0,
                        help="CPUs (and torch threads) per actor (default: 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0,
                        help="GPUs per actor; above 0 scores on CUDA (default: 0)")
    parser.add_argument("--address", help="Ray cluster to join: auto or HOST:PORT (default: start "
                        "Ray on this machine)")
    args = parser.parse_args(argv)
    try:
        summary = score_images(args.model, args.inputs, args.output, args.format, args.workers,
                               args.batch_size, args.cpus_per_worker, args.gpus_per_worker,
                               args.address)
    except DistiladError as e:
        print(f"distilad: error: {e}", file=sys.stderr)
        return 2
    print(f"scored {summary['images']} images with {summary['workers']} worker(s) in "
          f"{summary['seconds']:.1f} s; {summary['format']} files in {summary['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
