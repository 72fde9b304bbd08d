"""Configuration choices made on the validation split, rendered into RESULTS.md.

A *study* names the candidate configurations of one choice (e.g. the RD teacher) and the
validation metric that decides it. The winner is computed here from the ``validation`` block of
the result files only; test figures are printed beside it for information, after the choice, and
never enter it. Studies are data, so adding a choice is adding an entry to :data:`STUDIES`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from distilad.bench.record import record_metric


@dataclass(frozen=True)
class Study:
    """One choice: ``candidates`` maps a label to (config name, validation metric key, test
    metric key); the candidate with the highest mean validation metric over ``datasets`` wins.

    ``cheaper_within`` (AUROC points) makes it a cost rule instead: the first candidate (the
    cheaper one) wins when on *every* dataset its validation metric is at least each other
    candidate's minus ``cheaper_within``; otherwise the best of the others on the mean."""

    title: str
    method: str
    datasets: tuple[str, ...]
    protocol: str
    candidates: tuple[tuple[str, str, str, str], ...]  # (label, config, val key, test key)
    note: str = ""
    cheaper_within: float | None = None


STUDIES: tuple[Study, ...] = (
    Study("RD default teacher (MVTec AD bottle, 20 epochs)", "rd", ("mvtec",), "mvtec",
          (("efficientnet_lite0", "v-lite0-e20", "image_auroc", "image_auroc"),
           ("efficientnet_lite1", "v-lite1-e20", "image_auroc", "image_auroc"),
           ("efficientnet_lite2", "v-lite2-e20", "image_auroc", "image_auroc")),
          "validation: held-out normals vs synthetic defects made from them; ties are broken by "
          "validation pixel AUROC, then by the cheaper teacher."),
    Study("RD novelty learning-rate schedule (Lite0, 32 px, 5 epochs, mean pooling)", "rd",
          ("mnist", "fashion-mnist", "cifar10"), "one-class",
          (("constant (paper)", "v-nd32-e5", "image_auroc", "image_auroc"),
           ("cosine decay", "v-nd32-e5-cos", "image_auroc", "image_auroc")),
          "validation: held-out normals vs 999 training images of the other nine classes."),
    Study("RD novelty image-score pooling (cosine schedule)", "rd",
          ("mnist", "fashion-mnist", "cifar10"), "one-class",
          (("mean of the map", "v-nd32-e5-cos", "image_auroc_mean_pool", "image_auroc_mean_pool"),
           ("max of the map (paper's MVTec score)", "v-nd32-e5-cos", "image_auroc_max_pool",
            "image_auroc_max_pool")),
          "both poolings are read from the same runs' maps."),
    Study("RD novelty input size (Lite0, cosine schedule, 5 epochs, mean pooling)", "rd",
          ("mnist", "fashion-mnist", "cifar10"), "one-class",
          (("32 px (official data code)", "v-nd32-e5-cos", "image_auroc", "image_auroc"),
           ("64 px (4x the cost)", "v-nd64-e5-cos", "image_auroc", "image_auroc")),
          "compared on the classes both sizes have (0-4 on the 2-core machine); the cheaper "
          "size wins a tie."),
    Study("Transformaly multimodal epochs (Lite0, 128 px; class 0, seed 0)", "transformaly",
          ("fashion-mnist", "cifar10"), "one-class-anomalous",
          (("1 epoch (1.8x the unimodal default's steps)", "mm-e1", "image_auroc",
            "image_auroc"),
           ("5 epochs (the default)", "mm-e5", "image_auroc", "image_auroc")),
          "validation-only runs (`--validate`): held-out normals of the nine classes vs 1000 "
          "training images of the anomalous class; the rule, written before the runs "
          "(methods/transformaly/README.md): 1 epoch if within 0.5 points of 5 on both "
          "datasets.", cheaper_within=0.5),
)

#: tie-break order of secondary validation metrics, then the candidate listed first wins
_TIE_BREAK = ("pixel_auroc",)


def _mean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def study_table(study: Study, runs: list[dict[str, Any]]) -> list[str]:
    """Markdown lines for one study; [] when no candidate has validated runs yet. Candidates
    are compared on the (class, seed) pairs that all of them have, per dataset."""
    by_cfg: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in runs:
        if r.get("method") == study.method and r.get("protocol") == study.protocol:
            by_cfg[(r["config"], r["dataset"])].append(r)
    # compare on equal terms: per dataset, only the (class, seed) pairs every candidate has
    common: dict[str, set] = {}
    for ds in study.datasets:
        keysets = [{(r["category"], r["seed"]) for r in by_cfg.get((cfg, ds), [])
                    if r.get("validation")} for _, cfg, _, _ in study.candidates]
        common[ds] = set.intersection(*keysets) if keysets else set()
    rows = []
    for label, cfg, vkey, tkey in study.candidates:
        per_ds = []
        for ds in study.datasets:
            rs = [r for r in by_cfg.get((cfg, ds), []) if r.get("validation")
                  and (r["category"], r["seed"]) in common[ds]]
            per_ds.append((len(rs), _mean([record_metric(r, vkey, "validation") for r in rs]),
                           _mean([record_metric(r, tkey) for r in rs]),
                           tuple(_mean([record_metric(r, k, "validation") for r in rs]) for k in _TIE_BREAK)))
        rows.append((label, cfg, per_ds))
    if not any(n for _, _, per_ds in rows for n, *_ in per_ds):
        return []
    complete = [row for row in rows if all(n for n, *_ in row[2])]
    # the decision: mean over datasets of the validation metric, then the tie-breaks (rounded to
    # 0.1 points so that noise-level differences fall to the tie-break)
    def key(row: tuple) -> tuple:
        per_ds = row[2]
        main = round(100 * float(np.mean([v for _, v, _, _ in per_ds])), 1)
        ties = tuple(round(100 * float(np.mean([t[i] for *_, t in per_ds])), 1)
                     for i in range(len(_TIE_BREAK)))
        return (main, *[-math.inf if math.isnan(t) else t for t in ties])
    winner = None
    if len(complete) == len(rows):
        pool = rows
        if study.cheaper_within is not None:
            pool = rows[:1] if _cheaper_holds(rows, study.cheaper_within) else rows[1:]
        best = max(key(r) for r in pool)
        winner = next(r[0] for r in pool if key(r) == best)  # first listed wins a full tie
    lines = [f"### {study.title}", ""]
    head = ["candidate", "config"]
    for ds in study.datasets:
        head += [f"{ds} val. AUROC", f"{ds} test AUROC", "runs"]
    head.append("chosen on validation")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, cfg, per_ds in rows:
        cells = [label, f"`{cfg}`"]
        for n, v, t, _ in per_ds:
            cells += ["-" if math.isnan(v) else f"{100 * v:.2f}",
                      "-" if math.isnan(t) else f"{100 * t:.2f}", str(n)]
        cells.append("**yes**" if label == winner else "")
        lines.append("| " + " | ".join(cells) + " |")
    rule = ("Decided by the mean validation AUROC over the datasets (rounded to 0.1 points)"
            if study.cheaper_within is None else
            f"Decided by cost: the first (cheaper) candidate unless another leads it by more than "
            f"{study.cheaper_within:g} points of validation AUROC on some dataset (then the best "
            f"of the others on the mean)")
    lines += ["", (rule + "; test AUROC is shown only beside the decision. " + study.note)
              if winner else "Not decided yet: some candidates have no validated runs.", ""]
    if winner and study.cheaper_within is None:
        margin = _margin(rows)
        step = _resolution(study, by_cfg, common)
        if margin < step:
            lines += [f"**Weak choice**: the winner leads by {margin:.2f} points, less than one "
                      f"discordant normal/anomalous pair of a validation run ({step:.2f} points): "
                      "on this validation split the candidates are not distinguishable.", ""]
    return lines


def _cheaper_holds(rows: list[tuple], within: float) -> bool:
    """Whether the first row's validation metric is within ``within`` points of every other
    row's on every dataset."""
    first = rows[0][2]
    return all(100 * (v - first[d][1]) <= within
               for _, _, per_ds in rows[1:] for d, (_, v, _, _) in enumerate(per_ds))


def _margin(rows: list[tuple]) -> float:
    """Points between the best and the second-best mean validation metric (unrounded)."""
    means = sorted((100 * float(np.mean([v for _, v, _, _ in per_ds])) for *_, per_ds in rows),
                   reverse=True)
    return means[0] - means[1] if len(means) > 1 else math.inf


def _resolution(study: Study, by_cfg: dict, common: dict) -> float:
    """AUROC points of one discordant pair in a typical validation run (largest over datasets):
    100 / (n_normal * n_anomalous)."""
    steps = []
    for ds in study.datasets:
        for _, cfg, _, _ in study.candidates:
            for r in by_cfg.get((cfg, ds), []):
                v = r.get("validation") or {}
                if (r["category"], r["seed"]) in common[ds] and v.get("n_normal") \
                        and v.get("n_anomalous"):
                    steps.append(100.0 / (v["n_normal"] * v["n_anomalous"]))
    return max(steps) if steps else 0.0


def choices_section(runs: list[dict[str, Any]]) -> list[str]:
    """The '## Choices made on validation' section (empty when no study has runs)."""
    body: list[str] = []
    for study in STUDIES:
        body += study_table(study, runs)
    if not body:
        return []
    return ["## Choices made on validation", "",
            "Each choice below is computed from the `validation` block of the result files "
            "(training split only: held-out normals vs synthetic defects or other classes' "
            "training images), by `distilad.bench.choices`. Tables of configurations without "
            "validation figures say so: those were chosen before the validation split existed.",
            ""] + body
