"""RESULTS.md section for ``benchmarks/study_transformaly_teacher.py`` records
(``kind: study_transformaly_teacher``): Transformaly's pretrained density per teacher and input
size, validation AUROC per class, test AUROC only where a run read the test split."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def teacher_study_section(recs: list[dict[str, Any]]) -> list[str]:
    """One table per (dataset, seed, class set): a row per (teacher, input size), the validation
    AUROC of each class and their mean, then the test mean where it was measured."""
    lines = ["## Transformaly teacher study: the pretrained density per teacher and size "
             "(issue 11)", "",
             "`benchmarks/study_transformaly_teacher.py`: the teacher's pooled feature -> PCA "
             "whitening (90 %) -> Gaussian, fitted on the class's training images less the "
             "held-out 10 % (the split `distilad bench` makes); `val.` = those held-out normals "
             "vs 999 training images of the other classes. The choice reads the `val.` columns "
             "only; `test` is shown only for runs made with `--test` (the others never read "
             "the test split). No teacher-student part: it needs training with each teacher. "
             "`train features s`: the teacher's pass over those training images, one thread, "
             "beside other runs (indicative of the relative cost only).",
             ""]
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        classes = tuple(row["class"] for row in r["per_class"])
        groups[(r["dataset"], r["seed"], classes)].append(r)
    for (dataset, seed, classes), group in sorted(groups.items()):
        # one row per configuration: a --test run and a validation-only run of the same
        # configuration have the same validation figures; the row shows the test one's
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for r in sorted(group, key=lambda r: r.get("test_evaluated", False)):
            rows[(r["params"]["backbone"], r["params"]["image_size"])] = r
        lines += [f"### {dataset}, classes {', '.join(map(str, classes))}, seed {seed}", "",
                  "| teacher | size | " + " | ".join(f"val. class {c}" for c in classes)
                  + " | **val. mean** | test mean | train features s | 1 thread |",
                  "|" + "---|" * (len(classes) + 6)]
        for (backbone, size), r in sorted(rows.items(),
                                          key=lambda kv: (kv[0][1], kv[0][0])):
            cells = [_pct(row["validation_auroc"]) for row in r["per_class"]]
            threads = "yes" if r.get("torch_threads") == 1 else str(r.get("torch_threads"))
            lines.append(f"| {backbone.replace('efficientnet_', '')} | {size} | "
                         + " | ".join(cells)
                         + f" | **{_pct(r['validation_auroc_mean'])}** | "
                         f"{_pct(r.get('test_auroc_mean'))} | "
                         f"{r['feature_seconds']['train']:.0f} ({r['n_train_features']} img) | "
                         f"{threads} |")
        lines.append("")
    return lines
