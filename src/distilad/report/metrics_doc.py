"""Metrics as a user reads them: every expected metric present, undefined ones ``None`` with the
reason, counts as integers, readable labels. Used by ``metrics.json``, the HTML report and the
CLI printout, so that the three say the same thing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: metric key -> label for people, in the order they are shown.
METRIC_LABELS: dict[str, str] = {
    "image_auroc": "image AUROC",
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO@0.3",
    "pro_rd4ad_per_image": "PRO (RD4AD per-image)",
    "image_ap": "image AP",
    "image_f1_max": "image F1-max",
    "fpr_at_threshold": "FPR at threshold",
    "tpr_at_threshold": "TPR at threshold",
    "image_auroc_max_pool": "image AUROC (max of map)",
    "image_auroc_mean_pool": "image AUROC (mean of map)",
}

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1_max")
PIXEL_METRICS = ("pixel_auroc", "aupro", "pro_rd4ad_per_image")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def as_count(v: Any) -> Any:
    """An integral float count (``12.0``) as ``int``; anything else unchanged."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def explain_metrics(metrics: Mapping[str, Any], *, has_maps: bool, has_masks: bool,
                    calibrated: bool = True) -> tuple[dict[str, Any], list[str]]:
    """Complete a metrics dict (as from ``evaluate.compute_metrics``) for reading.

    Counts (keys ``n_*``) become ints. Each expected metric that is missing or not finite is set
    to ``None`` and one note per reason says why (e.g. ``"image_auroc, image_ap, image_f1_max,
    tpr_at_threshold: null because there are no anomalous images"``).

    Args:
        metrics: metric name -> value; ``n_images`` and ``n_anomalous`` are used for the reasons.
        has_maps: the method produced anomaly maps.
        has_masks: the data has ground-truth masks.
        calibrated: the model has a threshold (FPR / TPR at threshold are then expected).

    Returns:
        (metrics with ``None`` for undefined values, list of notes).
    """
    m: dict[str, Any] = {k: (as_count(float(v)) if k.startswith("n_") and _finite(v) else v)
                         for k, v in metrics.items()}
    notes: list[str] = []

    def undefined(keys: tuple[str, ...], reason: str) -> None:
        missing = [k for k in keys if not _finite(m.get(k))]
        for k in missing:
            m[k] = None
        if missing:
            notes.append(f"{', '.join(missing)}: null because {reason}")

    n, n_anom = m.get("n_images"), m.get("n_anomalous")
    if n is not None and n_anom is not None:
        if n == 0:
            undefined(IMAGE_METRICS, "there are no images")
        elif n_anom == 0:
            undefined(IMAGE_METRICS + (("tpr_at_threshold",) if calibrated else ()),
                      "there are no anomalous images")
        elif n_anom == n:
            undefined(IMAGE_METRICS + (("fpr_at_threshold",) if calibrated else ()),
                      "there are no normal images")
    if not has_maps:
        undefined(PIXEL_METRICS, "this method gives no anomaly maps")
    elif not has_masks:
        undefined(PIXEL_METRICS, "the data has no ground-truth masks")
    else:
        undefined(PIXEL_METRICS, "the masks have no defect pixels, or no normal pixels")
    rest = [k for k, v in m.items() if isinstance(v, float) and not math.isfinite(v)]
    for k in rest:
        m[k] = None
    if rest:
        notes.append(f"{', '.join(rest)}: null because the value is not a finite number")
    return m, notes


def metric_lines(metrics: Mapping[str, Any], indent: str = "  ") -> list[str]:
    """Printable ``label  value`` lines of the known metrics that have a value."""
    return [f"{indent}{label:<26s} {float(metrics[key]):.4f}"
            for key, label in METRIC_LABELS.items() if _finite(metrics.get(key))]


def validation_caption(validation: Mapping[str, Any]) -> str:
    """One sentence saying what a ``fit_info["validation"]`` entry measured."""
    kind = validation.get("kind")
    n_norm, n_anom = validation.get("n_normal"), validation.get("n_anomalous")
    counts = (f" ({as_count(n_norm)} normal, {as_count(n_anom)} anomalous)"
              if n_norm is not None and n_anom is not None else "")
    if kind == "synthetic-defects":
        what = "held-out normal training images vs synthetic defects made from them"
    elif kind == "given-anomalies":
        what = "held-out normal training images vs the anomalous images given for validation"
    else:
        what = f"held-out normal training images ({kind or 'unknown kind'})"
    return f"validation on {what}{counts}; measured at fit time, without the test set"
