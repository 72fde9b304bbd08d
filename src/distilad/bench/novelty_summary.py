"""RESULTS.md section: the novelty methods side by side, one table per (dataset, protocol).

Each method appears with the configuration its README reports (``REPORTED``, in order of
preference: the first name with runs is shown), so a user sees on one page which method to pick
for MNIST, Fashion-MNIST or CIFAR-10, at what cost. Rows: the classes (mean over seeds), the
10-class mean (per seed, then mean ± std over the seeds that have every class), the paper's
mean, the number of seeds, the mean training seconds per run and the inference time per image.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from typing import Any

import numpy as np

from distilad.bench.paper_values import paper_value
from distilad.bench.record import mean_std_text, record_metric, seed_means

DATASETS = ("mnist", "fashion-mnist", "cifar10")
PROTOCOLS = ("one-class", "one-class-anomalous")
#: (method, protocol) -> (column title, config name patterns in order of preference); the
#: configurations each method's README reports
REPORTED: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("rd", "one-class"): ("RD", ("nd32-e5-cos",)),
    ("rd", "one-class-anomalous"): ("RD", ("nd32-e1",)),
    ("transformaly", "one-class"): ("Transformaly (sum)", ("default",)),
    ("transformaly", "one-class-anomalous"): ("Transformaly (sum)", ("e1", "default")),
    ("edegan", "one-class"): ("EDE-GAN", ("e15",)),
    ("pkdgan", "one-class"): ("P-KDGAN two-step student", ("two-step-t15-*",)),
}
#: (method, protocol, dataset) -> config patterns preferred to ``REPORTED``'s, where a README
#: reports a configuration chosen per dataset (EDE-GAN: the length validated on each dataset)
REPORTED_PER_DATASET: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("edegan", "one-class", "mnist"): ("e4-dcgan",),
    ("edegan", "one-class", "fashion-mnist"): ("e2-dcgan",),
    ("edegan", "one-class", "cifar10"): ("e3-dcgan",),
}


def _pick(runs: list[dict[str, Any]], method: str, dataset: str, protocol: str
          ) -> tuple[str, list[dict[str, Any]]] | None:
    """(config, runs) of the first reported pattern with runs of (method, dataset, protocol)."""
    title_patterns = REPORTED.get((method, protocol))
    if title_patterns is None:
        return None
    mine = [r for r in runs if (r["method"], r["dataset"], r["protocol"])
            == (method, dataset, protocol)]
    preferred = REPORTED_PER_DATASET.get((method, protocol, dataset), ())
    for pattern in (*preferred, *title_patterns[1]):
        configs = sorted({r["config"] for r in mine if fnmatch.fnmatchcase(r["config"], pattern)})
        if configs:
            return configs[0], [r for r in mine if r["config"] == configs[0]]
    return None


def _class_means(recs: list[dict[str, Any]]) -> dict[str, float]:
    by_class: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        by_class[str(r["category"])].append(r["metrics"]["image_auroc"])
    return {c: float(np.mean(v)) for c, v in by_class.items()}


def novelty_summary_section(runs: list[dict[str, Any]]) -> list[str]:
    """The side-by-side tables for the (dataset, protocol) pairs with runs of 2+ methods."""
    lines = ["## Novelty detection: the methods side by side", "",
             "Image AUROC on the test split, each method in the configuration its README "
             "reports (named under the table). A class cell is the mean over that class's "
             "seeds; the mean row is the 10-class mean per seed, then mean ± std over the seeds "
             "that have all 10 classes ('-' while a sweep is incomplete). Train s and inference "
             "ms are means per run as recorded (different machines and thread counts: see each "
             "method's table above).", ""]
    methods = sorted({m for m, _ in REPORTED})
    n_tables = 0
    for dataset in DATASETS:
        for protocol in PROTOCOLS:
            columns = [(REPORTED[(m, protocol)][0], *picked) for m in methods
                       if (picked := _pick(runs, m, dataset, protocol)) is not None]
            if len(columns) < 2:
                continue
            n_tables += 1
            lines += _table(dataset, protocol, columns)
    return lines if n_tables else []


def _table(dataset: str, protocol: str, columns: list[tuple[str, str, list[dict[str, Any]]]]
           ) -> list[str]:
    classes = sorted({str(r["category"]) for _, _, recs in columns for r in recs},
                     key=lambda c: (len(c), c))
    n_classes = 10
    per_class = [_class_means(recs) for _, _, recs in columns]
    lines = [f"### {dataset} · {protocol}", "",
             "| class | " + " | ".join(title for title, _, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for c in classes:
        cells = [f"{100 * m[c]:.2f}" if c in m else "" for m in per_class]
        present = [m[c] for m in per_class if c in m]
        best = max(present) if len(present) > 1 else None  # bold only a comparison
        cells = [f"**{cell}**" if c in m and m[c] == best else cell
                 for cell, m in zip(cells, per_class, strict=True)]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    means = [seed_means(recs, sorted({r['seed'] for r in recs}), n_classes,
                        lambda r: record_metric(r, "image_auroc")) for _, _, recs in columns]
    lines.append("| **mean** | " + " | ".join(mean_std_text(v) if v else "-" for v in means)
                 + " |")
    papers = []
    for _, _, recs in columns:
        pv = paper_value(recs[0]["method"], dataset, protocol, "mean", "image_auroc")
        papers.append("" if pv is None else f"{100 * pv[0]:.1f}")
    lines.append("| paper (mean) | " + " | ".join(papers) + " |")
    lines.append("| seeds with 10 classes | " + " | ".join(str(len(v)) for v in means) + " |")
    lines.append("| train s / run | " + " | ".join(
        f"{np.mean([r['train_seconds'] for r in recs]):.0f}" for _, _, recs in columns) + " |")
    lines.append("| inference ms / image | " + " | ".join(
        f"{np.mean([r['inference_ms_per_image'] for r in recs]):.2f}"
        for _, _, recs in columns) + " |")
    lines += ["", "Configurations: " + ", ".join(f"{title} `{config}`"
                                                 for title, config, _ in columns), ""]
    return lines
