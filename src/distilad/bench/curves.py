"""RESULTS.md section "Learning curves": validation AUROC by epoch, from the runs whose fit
recorded ``fit_info["validation_curve"]`` (the GANs' ``validation_curve=True``).

Each curve point is ``{"phase", "epoch", "latent", "reconstruction"}`` (image AUROC of the
validation split, 0..1). Per configuration, a table gives the mean over every run (all classes
and seeds) for each phase and score, and the mean of classes 0 and 1 alone (over seeds), one
column per epoch; the best epoch of each row is in bold. Only validation figures appear here: a
training length read off these curves never looked at the test split.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

#: classes shown one by one beside the mean (the issue asks for two per dataset)
SHOWN_CLASSES = ("0", "1")


def _row(label: str, curves: list[list[float | None]]) -> list[str]:
    """Mean per epoch over ``curves`` (equal lengths), best in bold."""
    arr = np.array([[np.nan if v is None else v for v in c] for c in curves], dtype=float)
    mean = np.nanmean(arr, axis=0) * 100
    best = int(np.nanargmax(mean))
    cells = [f"**{v:.1f}**" if i == best else f"{v:.1f}" for i, v in enumerate(mean)]
    return [f"| {label} | " + " | ".join(cells) + f" | {best + 1} |"]


def curves_section(runs: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the section (empty when no run recorded a curve)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if (r.get("fit_info") or {}).get("validation_curve"):
            groups[(r["method"], r["dataset"], r["protocol"], r["config"])].append(r)
    if not groups:
        return []
    lines = ["## Learning curves (validation AUROC by epoch)", "",
             "Validation image AUROC after each training epoch (held-out normals vs other "
             "classes' training images; the test split is not read), mean over runs; `latent` "
             "is the default score, `recon.` the reconstruction score; bold: the best epoch of "
             "the row. P-KDGAN rows follow the model each phase trains (the teacher while it is "
             "pretrained, then the student).", ""]
    for key in sorted(groups):
        recs = groups[key]
        method, dataset, protocol, config = key
        by_phase: dict[str, list[tuple[str, list[dict[str, Any]]]]] = defaultdict(list)
        for r in recs:
            pts = r["fit_info"]["validation_curve"]
            for phase in dict.fromkeys(p["phase"] for p in pts):
                by_phase[phase].append((str(r["category"]),
                                        [p for p in pts if p["phase"] == phase]))
        n_ep = max(len(c) for runs_ in by_phase.values() for _, c in runs_)
        seeds = sorted({r["seed"] for r in recs})
        lines += [f"### {method} · {dataset} · {protocol} · config `{config}`", "",
                  f"{len(recs)} runs ({len({r['category'] for r in recs})} classes, seeds "
                  f"{seeds}).", "",
                  "| phase · score · runs | " + " | ".join(str(e) for e in range(1, n_ep + 1))
                  + " | best |", "|---|" + "---|" * (n_ep + 1)]
        for phase, items in by_phase.items():
            full = [c for _, c in items if len(c) == n_ep]
            if not full:
                continue
            for score, short in (("latent", "latent"), ("reconstruction", "recon.")):
                lines += _row(f"{phase} · {short} · all {len(full)}",
                              [[p[score] for p in c] for c in full])
            for cls in SHOWN_CLASSES:
                cs = [c for k, c in items if k == cls and len(c) == n_ep]
                if cs:
                    lines += _row(f"{phase} · latent · class {cls} ({len(cs)})",
                                  [[p["latent"] for p in c] for c in cs])
        lines.append("")
    return lines
