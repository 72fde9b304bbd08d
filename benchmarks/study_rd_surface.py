"""Issue 15's RD scoring study: map normalisation and the teacher-patch Gaussian, every variant
scored from one trained student. Writes one JSON per (dataset, category, seed) into
benchmarks/results/ (``kind`` = ``study_rd_surface``).

    OMP_NUM_THREADS=1 python benchmarks/study_rd_surface.py --dataset elpv --category mono \\
        --seed 0 [--holdout-fraction 0.3] [--backbone efficientnet_lite2] [--image-size 320] \\
        [--data-root ../shared/data] [--commit SHA]

RD is fitted once with ``map_normalization="holdout", patch_density="gaussian"``, which computes
every statistic after training (the student does not depend on them: it is the default's). RD's
raw map and the density map of the held-out normals, the validation anomalies (ELPV: the
protocol's reserved anomalous cells; MVTec: synthetic defects of the held-out normals, as
``fit`` makes them) and the test images are computed once; each variant then combines them
(``distilad.methods.rd.surface.combine``), pools by max, calibrates its threshold on its own
held-out scores (``target_fpr`` 0.01) and is measured on validation and test. All variants share
one hold-out. Inference time: ``det.score`` with each variant's arguments on the first 16 test
images, interleaved rounds (so all meet the same load), ms/image, RD's default scoring batch
(``score_batch_size="auto"``); the load average is recorded. ELPV's uncertain cells are not
scored here (the bench does that).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import distilad
from distilad.backbones import DEFAULT_TEACHER
from distilad.bench.record import environment, git_commit, peak_rss_mb, write_json_atomic
from distilad.bench.runner import RunSpec, load_task
from distilad.calibration import Calibration
from distilad.data.transforms import resize_map
from distilad.data.validation import synthetic_defects, validation_set
from distilad.detector import ScoreResult, holdout_split
from distilad.evaluate import compute_metrics
from distilad.methods.rd.surface import combine, leave_one_out

#: name -> the scoring arguments of the variant (all others: RD's defaults)
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"map_normalization": "none", "patch_density": "none"},
    "map_norm": {"map_normalization": "holdout", "patch_density": "none"},
    "density": {"map_normalization": "none", "patch_density": "gaussian", "rd_weight": 0.0},
    "density_map_norm": {"map_normalization": "holdout", "patch_density": "gaussian",
                         "rd_weight": 0.0},
    "combined": {"map_normalization": "none", "patch_density": "gaussian"},
    "combined_map_norm": {"map_normalization": "holdout", "patch_density": "gaussian"},
}
SCORING_KEYS = ("map_normalization", "patch_density", "rd_weight", "density_weight")


def variant_maps(det: Any, rd: torch.Tensor, den: torch.Tensor, v: dict[str, Any],
                 holdout: bool = False) -> torch.Tensor:
    """(N, S, S) maps of variant ``v`` from the raw maps, in chunks; ``holdout``: the maps are
    the held-out normals', standardised per pixel with leave-one-out statistics as ``fit``
    calibrates them."""
    density = v["patch_density"] == "gaussian"
    per_pixel = v["map_normalization"] == "holdout"
    loo = ({"rd": leave_one_out(rd), "density": leave_one_out(den)} if holdout and per_pixel
           else None)
    out = []
    for a in range(0, rd.shape[0], 64):
        part = (None if loo is None else
                {k: (m[a:a + 64], s[a:a + 64]) for k, (m, s) in loo.items()})
        out.append(combine(det.surface, rd[a:a + 64], den[a:a + 64] if density else None,
                           per_pixel, float(v.get("rd_weight", 1.0)),
                           float(v.get("density_weight", 1.0)), part))
    return torch.cat(out)


def metrics_of(images: Any, scores: np.ndarray, maps: torch.Tensor | None, cal: Calibration
               ) -> dict[str, float]:
    """compute_metrics on ``images`` (labelled); maps resized to each image's size as ``_score``
    does (only where the images have masks: pixel metrics)."""
    out_maps = None
    if maps is not None and images.has_masks:
        out_maps = [resize_map(m, images.image_shape(i)) for i, m in enumerate(maps.numpy())]
    result = ScoreResult(image_scores=scores, anomaly_maps=out_maps, names=list(images.names))
    result.labels = cal.predict(scores)
    return compute_metrics(images, result)


def time_variants(det: Any, images: Any, repeats: int) -> dict[str, float]:
    """ms/image of ``det.score`` under each variant's arguments (median of interleaved rounds
    after one warm-up round, which also measures the auto batch size)."""
    base = dict(det.params)
    seconds: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for r in range(repeats + 1):
        for name, v in VARIANTS.items():
            det.params = det.checked_params({**base, **{k: 1.0 for k in SCORING_KEYS[2:]}, **v})
            t0 = time.perf_counter()
            det.score(images)
            if r:
                seconds[name].append(time.perf_counter() - t0)
    det.params = base
    return {k: 1000 * statistics.median(s) / len(images) for k, s in seconds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=("elpv", "mvtec"), required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout-fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--backbone", default=DEFAULT_TEACHER, help="RD's teacher")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--commit", default=None, help="the code version (default: git HEAD)")
    ap.add_argument("--time-images", type=int, default=16)
    ap.add_argument("--time-repeats", type=int, default=2)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    # read at start (the run is long); bench.record.git_commit when not given
    commit = args.commit or git_commit()
    spec = RunSpec("rd", args.dataset, args.dataset, args.category, args.seed, (), "surface")
    task = load_task(spec, args.data_root)
    params = dict(seed=args.seed, holdout_fraction=args.holdout_fraction, epochs=args.epochs,
                  image_size=args.image_size, backbone=args.backbone,
                  map_normalization="holdout", patch_density="gaussian", progress=False,
                  device="cpu")
    det = distilad.create_detector("rd", **params)
    t0 = time.perf_counter()
    det.fit(task.train, validation=None)
    fit_seconds = time.perf_counter() - t0
    _, hold_idx = holdout_split(len(task.train), args.holdout_fraction, args.seed)
    holdout = task.train.subset(hold_idx)
    anomalies = (synthetic_defects(holdout, args.seed) if task.validation == "synthetic"
                 else task.validation)
    vset = validation_set(holdout, anomalies, args.seed)
    t1 = time.perf_counter()
    raw = {"holdout": det.raw_maps(holdout), "anomalies": det.raw_maps(anomalies),
           "test": det.raw_maps(task.test)}
    raw_seconds = time.perf_counter() - t1
    print(f"fit {fit_seconds:.0f} s, raw maps {raw_seconds:.0f} s", flush=True)

    variants: dict[str, Any] = {}
    for name, v in VARIANTS.items():
        maps = {k: variant_maps(det, *raw[k], v, holdout=k == "holdout") for k in raw}
        scores = {k: m.flatten(1).max(1).values.double().numpy() for k, m in maps.items()}
        cal = Calibration.from_holdout(scores["holdout"], None, det.params["target_fpr"])
        val_maps = torch.cat([maps["holdout"], maps["anomalies"]])
        val_scores = np.concatenate([scores["holdout"], scores["anomalies"]])
        variants[name] = {
            "params": v,
            "validation": metrics_of(vset, val_scores, val_maps, cal),
            "test": metrics_of(task.test, scores["test"], maps["test"], cal),
            "threshold": cal.threshold,
        }
        del maps, val_maps
        print(name, {k: round(variants[name][k]["image_auroc"], 4)
                     for k in ("validation", "test")}, flush=True)
    load_before = os.getloadavg()
    timing = time_variants(det, task.test.subset(range(args.time_images)), args.time_repeats)
    load_after = os.getloadavg()
    for name, ms in timing.items():
        variants[name]["inference_ms_per_image"] = ms
        variants[name]["inference_time_vs_default"] = ms / timing["default"]
    info = dict(det.fit_info)
    record = {
        "kind": "study_rd_surface",
        "method": "rd",
        "dataset": args.dataset,
        "category": args.category,
        "seed": args.seed,
        "holdout_fraction": args.holdout_fraction,
        "params": {k: v for k, v in det.params.items() if k not in ("progress", "feature_cache")},
        "data": task.description,
        "n_train": info["n_train"],
        "n_holdout": info["n_holdout"],
        "n_validation_anomalies": len(anomalies),
        "n_test": len(task.test),
        "variants": variants,
        "surface_fit": info.get("surface"),
        "train_seconds": info["train_seconds"],
        "fit_seconds_total": round(fit_seconds, 3),
        "raw_map_seconds": round(raw_seconds, 3),
        "timing": {"images": args.time_images, "rounds": args.time_repeats,
                   "score_batch_size": det.params["score_batch_size"],
                   "load_average_1min_before_after": [round(load_before[0], 2),
                                                      round(load_after[0], 2)],
                   "note": "indicative: other processes shared this machine's CPUs"},
        "command": "python benchmarks/study_rd_surface.py " + " ".join(sys.argv[1:]),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **environment("cpu", commit),
        "torch_threads": torch.get_num_threads(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tag = f"h{round(100 * args.holdout_fraction)}"
    if args.backbone != DEFAULT_TEACHER:  # e.g. efficientnet_lite2 -> _lite2
        tag += "_" + args.backbone.rsplit("_", 1)[-1]
    if args.image_size != 256:
        tag += f"_s{args.image_size}"
    out = (Path(args.results) /
           f"study_rd_surface_{args.dataset}_{args.category}_{tag}_seed{args.seed}.json")
    write_json_atomic(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
