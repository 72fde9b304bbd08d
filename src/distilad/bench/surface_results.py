"""RESULTS.md section for ``benchmarks/study_rd_surface.py`` records (``kind: study_rd_surface``):
RD's scoring variants (map normalisation, teacher-patch Gaussian) scored from one trained student
per run, validation beside test."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from distilad.bench.record import mean_std_text

#: (where, metric key, column title); validation first: the choice reads those alone
COLUMNS = [("validation", "image_auroc", "val. image AUROC"),
           ("validation", "pixel_auroc", "val. pixel AUROC"),
           ("validation", "tpr_at_threshold", "val. TPR at thr."),
           ("test", "image_auroc", "test image AUROC"), ("test", "image_ap", "test AP"),
           ("test", "image_f1_max", "test F1-max"),
           ("test", "tpr_at_threshold", "test TPR at thr."),
           ("test", "fpr_at_threshold", "test FPR at thr."),
           ("test", "pixel_auroc", "test pixel AUROC")]


def surface_study_section(recs: list[dict[str, Any]]) -> list[str]:
    """One table per (dataset, category, hold-out share, teacher, input size): a row per variant,
    mean ± std over the seeds present."""
    lines = ["## RD scoring study: map normalisation and teacher-patch density (issue 15)", "",
             "`benchmarks/study_rd_surface.py`: one RD fit per (category, seed) with every "
             "statistic computed after training; each variant scores the same student "
             "(`methods/rd/README.md`, section \"Surface options\"). All variants of a run share "
             "its hold-out (calibration and the statistics). `val.` = held-out normals vs the "
             "ELPV validation cells / synthetic defects (bottle); the choice reads those columns "
             "only. Time: `det.score` ms/image relative to the default in the same interleaved "
             "rounds (indicative: shared, loaded CPU; 1 thread).", ""]
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        groups[(r["dataset"], r["category"], r["holdout_fraction"], r["params"]["backbone"],
                r["params"]["image_size"])].append(r)
    for (dataset, category, hf, backbone, size), group in sorted(groups.items()):
        seeds = sorted(r["seed"] for r in group)
        g0 = group[0]
        lines += [f"### {dataset} {category}, {backbone} {size} px, holdout_fraction {hf} "
                  f"(n_train {g0['n_train']}, "
                  f"n_holdout {g0['n_holdout']}, {g0['n_validation_anomalies']} validation "
                  f"anomalies, {g0['n_test']} test images), seeds "
                  f"{', '.join(map(str, seeds))}", "",
                  "| variant | " + " | ".join(c[2] for c in COLUMNS) + " | time vs default |",
                  "|" + "---|" * (len(COLUMNS) + 2)]
        for name in g0["variants"]:
            cells = [mean_std_text([r["variants"][name][where].get(key, math.nan) for r in group])
                     for where, key, _ in COLUMNS]
            ratio = mean_std_text([r["variants"][name].get("inference_time_vs_default", math.nan)
                               for r in group], scale=1.0)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio}x |")
        lines.append("")
    return lines
