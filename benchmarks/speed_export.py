"""Speed of the exported RD graph in onnxruntime beside PyTorch's, and their parity on the bottle
test images. Writes one JSON into benchmarks/results/.

    python benchmarks/speed_export.py [--backbone efficientnet_lite1] [--threads 2] [--data DIR]

Trains RD for one epoch on 60 images (the weights' values do not change the speed), exports it with
``Detector.export_onnx`` and times, in one process with the same number of threads, ms/image at
batch 1 and 16 on uint8 bottle test images at the model's size:

- ``onnxruntime``: the exported graph (preprocessing, teacher, student, map with blur, score,
  calibration);
- ``torch_graph``: the same module in PyTorch eager mode (what was exported);
- ``torch_scoring_net``: PyTorch's teacher + student + map + score on preprocessed tensors
  (as ``speed_rd.py``'s ``infer_ms``), and ``torch_teacher`` the teacher alone.

Then the whole test split is scored through ``det.score`` and ``OnnxModel.score`` and the largest
differences are recorded. Timings: median and minimum per image over rounds that call every
path in turn (so that all meet the same load), after a warm-up; other processes on the machine
make them indicative (the load average is recorded beside them), the minimum less so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import distilad
from distilad.bench.record import environment, peak_rss_mb, write_json_atomic
from distilad.cli import demo_data_path
from distilad.data import mvtec_test, mvtec_train
from distilad.data.transforms import stack_images
from distilad.export import DeployedGraph
from distilad.onnx_model import OnnxModel, to_uint8_rgb


def interleaved_seconds(runs: dict[str, Callable[[], object]], repeats: int
                        ) -> dict[str, list[float]]:
    """Wall seconds of each call of ``runs``, ``repeats`` rounds after one warm-up round; every
    round calls each function once in turn, so that all of them meet the same load from other
    processes (one after the other, the last would meet a different machine than the first)."""
    for fn in runs.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="efficientnet_lite1")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=str(demo_data_path()))
    ap.add_argument("--repeats", type=int, default=5, help="rounds at batch 16 (4x at batch 1)")
    ap.add_argument("--train-images", type=int, default=60,
                    help="normal images to fit on (the speed does not depend on them)")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    det = distilad.create_detector("rd", backbone=args.backbone, image_size=args.image_size,
                                   epochs=1, progress=False, device="cpu")
    train = mvtec_train(args.data)
    det.fit(train.subset(range(min(args.train_images, len(train)))), validation=None)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        onnx_file = det.export_onnx(Path(tmp) / "rd.onnx")
        export_seconds = time.perf_counter() - t0
        size_mb = onnx_file.stat().st_size / 1e6
        model = OnnxModel(onnx_file, device="cpu", threads=args.threads)

        test = mvtec_test(args.data)
        size = args.image_size
        x16 = stack_images(test, range(16), size)  # the model's size (the bottle's own at 256)
        u16 = np.stack([to_uint8_rgb(x.permute(1, 2, 0).numpy()) for x in x16])
        graph = DeployedGraph(det._scoring_net(), det.calibration).eval()
        net = det._scoring_net().eval()
        timings: dict[str, float] = {}
        load_before = os.getloadavg()
        with torch.inference_mode():
            for bs in (1, 16):
                u, x = u16[:bs], x16[:bs]
                runs = {
                    "onnxruntime": lambda u=u: model.session.run(None, {"images": u}),
                    "torch_graph": lambda u=u: graph(torch.from_numpy(u)),
                    "torch_scoring_net": lambda x=x: net(x),
                    "torch_teacher": lambda x=x: det.teacher(x),
                }
                per_image = interleaved_seconds(runs, args.repeats * (4 if bs == 1 else 1))
                for name, seconds in per_image.items():
                    timings[f"{name}_ms_b{bs}"] = 1000 * statistics.median(seconds) / bs
                    timings[f"{name}_ms_b{bs}_min"] = 1000 * min(seconds) / bs
        load_after = os.getloadavg()

        t0 = time.perf_counter()
        want = det.score(test)
        torch_api = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = model.score(test)
        onnx_api = time.perf_counter() - t0
    rel = np.abs(got.image_scores - want.image_scores) / np.abs(want.image_scores)
    parity = {
        "images": len(test),
        "max_score_rel_diff": float(rel.max()),
        "max_map_abs_diff": float(np.abs(got.anomaly_maps - want.anomaly_maps).max()),
        "max_normalized_abs_diff": float(np.abs(got.normalized_scores
                                                - want.normalized_scores).max()),
        "labels_identical": bool(np.array_equal(got.labels, want.labels)),
        "n_anomalous_predicted": int(want.labels.sum()),
    }
    timings["score_api_ms_per_image_torch"] = 1000 * torch_api / len(test)
    timings["score_api_ms_per_image_onnx"] = 1000 * onnx_api / len(test)
    for bs in (1, 16):
        timings[f"speedup_onnx_vs_torch_graph_b{bs}_min"] = (
            timings[f"torch_graph_ms_b{bs}_min"] / timings[f"onnxruntime_ms_b{bs}_min"])
    record = {
        "kind": "speed_export",
        "model": f"rd {args.backbone} {args.image_size}px",
        "method": "rd",
        "dataset": "mvtec",
        "category": Path(args.data).name,
        "speed": timings,
        "parity": parity,
        "export": {"seconds": round(export_seconds, 1), "size_mb": round(size_mb, 2),
                   "check": det.last_export["export_check"]},
        "onnxruntime_version": onnxruntime.__version__,
        "onnxruntime_threads": args.threads,
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "note": "indicative: other processes shared this machine's CPUs during the run",
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **environment("cpu"),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(args.results) / f"speed_export_rd_{args.backbone}_{args.image_size}_t{args.threads}.json"
    write_json_atomic(out, record)
    for k, v in {**timings, **parity}.items():
        print(f"{k:36s} {v:.4g}" if isinstance(v, float) else f"{k:36s} {v}")
    print(f"export {export_seconds:.1f} s, {size_mb:.1f} MB; wrote {out}")


if __name__ == "__main__":
    main()
