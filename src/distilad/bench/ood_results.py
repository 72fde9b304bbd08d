"""RESULTS.md section for ``benchmarks/ood_adaptivemix.py`` records (``kind: ood_adaptivemix``):
the OOD classifier with AdaptiveMix on vs off, seeds paired."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from distilad.bench.record import mean_std_text


def _rows(rec: dict[str, Any]) -> dict[str, float]:
    """The table's rows of one record: ID accuracy, AUROC per OOD set and score, residual."""
    m = rec["metrics"]
    rows = {"in-distribution accuracy": m["accuracy_in"]}
    for ood_set, by_score in m["auroc"].items():
        for score, value in by_score.items():
            rows[f"AUROC {ood_set}, {score.replace('_', ' ')}"] = value
    rows["mixing residual x1e4 (test, no noise)"] = m.get("mixing_residual_test", math.nan)
    return rows


def ood_adaptivemix_section(recs: list[dict[str, Any]]) -> list[str]:
    """One table per configuration name: off and on (mean ± std over seeds) and the paired
    difference on - off over the seeds that have both arms."""
    lines = ["## AdaptiveMix: OOD detection with a CIFAR-10 classifier (on vs off)", "",
             "`benchmarks/ood_adaptivemix.py`. A CIFAR ResNet-18 layout with a unit embedding and "
             "a frozen orthogonal `|linear|` head, trained with mixup cross-entropy (off) or mixup "
             "cross-entropy + the AdaptiveMix MSE on the embedding, weight 1 (on); per seed both "
             "arms share the initial weights, batches, augmentations and mixtures. In: the CIFAR-10 "
             "test images of the trained classes; out: the held-out CIFAR-10 classes' test images, "
             "Fashion-MNIST and MNIST test (upscaled to 32 px RGB). Scores: `max logit` = |cos| to "
             "the nearest head direction; `subspace` = |cos| to the nearest class subspace fitted "
             "on training embeddings (lower = OOD). `paired` = mean ± std over seeds of on - off. "
             "Mixing residual: the term's quantity on 2,000 test images without noise "
             "(mean over elements, x 10^4; lower = more shrinkage).", ""]
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        by_name[r["name"]].append(r)
    for name in sorted(by_name):
        group = by_name[name]
        arms: dict[str, dict[int, dict[str, Any]]] = {"off": {}, "on": {}}
        for r in group:
            arms[r["arm"]][int(r["seed"])] = r
        paired = sorted(set(arms["off"]) & set(arms["on"]))
        first = group[0]
        cfg = first["config"]
        held = ", ".join(map(str, first.get("held_out_classes") or [])) or "none"
        secs = {a: [r["timings"]["wall_seconds"] for r in arms[a].values()] for a in arms}
        run_min = " / ".join(f"{np.mean(s) / 60:.1f}" if s else "-"
                             for s in (secs["off"], secs["on"]))
        lines += [f"### `{name}`", "",
                  f"{first['model']}; {first['n_train']} training images "
                  f"({len(first['trained_classes'])} classes, held out: {held}), "
                  f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, SGD lr {cfg['lr']} "
                  f"(cosine), momentum {cfg['momentum']}, wd {cfg['weight_decay']}; "
                  f"term weight {cfg['adaptivemix_weight']}, sigma {cfg['sigma']}. Seeds "
                  f"{', '.join(map(str, paired)) or '-'} paired. Minutes per run off / on: "
                  f"{run_min}; {first.get('device')} ({first.get('cpu', '?')}, "
                  f"{first.get('torch_threads')} threads), machine shared with other jobs; "
                  f"commit {str(first.get('git_commit'))[:12]}.", "",
                  "| metric | off | on | paired on - off |", "|---|---|---|---|"]
        row_names = list(_rows(first))
        for row in row_names:
            scale = 1e4 if row.startswith("mixing") else 100.0
            off = [_rows(r).get(row, math.nan) for r in arms["off"].values()]
            on = [_rows(r).get(row, math.nan) for r in arms["on"].values()]
            diff = [_rows(arms["on"][s])[row] - _rows(arms["off"][s])[row] for s in paired]
            lines.append(f"| {row} | {mean_std_text(off, scale)} | {mean_std_text(on, scale)} | "
                         f"{mean_std_text(diff, scale, signed=True)} |")
        lines.append("")
    return lines
