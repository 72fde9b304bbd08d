"""Scoring a fitted detector on labelled data: test metrics, what the reports need, and the
validation metrics ``Detector.fit`` stores (held-out normals vs synthetic defects made from them,
or vs anomalous images given to ``fit``; the test set is never involved)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from distilad import metrics
from distilad.data import ImageSet, as_image_set
from distilad.data.transforms import resize_map
from distilad.data.validation import synthetic_defects, validation_set
from distilad.detector import Detector, ScoreResult
from distilad.errors import DataError


def evaluate(detector: Detector, data: Any) -> tuple[dict[str, float], ScoreResult, ImageSet]:
    """Score ``data`` (labelled: an MVTec category's test split, or an ImageSet with labels) and
    compute image metrics, and pixel metrics where the data has masks and the method has maps.

    Returns (metrics, score result, the ImageSet that was scored).
    """
    images = as_image_set(data, split="test")
    if images.labels is None:
        raise DataError("evaluation needs labelled images (an MVTec-style category folder with "
                        "test/good and test/<defect> sub-folders, or an ImageSet with labels)")
    result = detector.score(images)
    return compute_metrics(images, result), result, images


def compute_metrics(images: ImageSet, result: ScoreResult) -> dict[str, float]:
    """Image AUROC / AP / F1-max, calibrated FPR and TPR; pixel AUROC, AUPRO@0.3 and the RD4AD
    per-image PRO where masks and maps exist. NaN where a metric is undefined."""
    labels = np.asarray(images.labels)
    scores = result.image_scores
    out: dict[str, float] = {"n_images": float(len(labels)), "n_anomalous": float(labels.sum())}
    if 0 < labels.sum() < len(labels):
        out["image_auroc"] = metrics.auroc(labels, scores)
        out["image_ap"] = metrics.average_precision(labels, scores)
        out["image_f1_max"] = metrics.f1_max(labels, scores)[0]
    if result.labels is not None:
        pred = result.labels
        normal, anomalous = labels == 0, labels == 1
        out["fpr_at_threshold"] = float(pred[normal].mean()) if normal.any() else math.nan
        out["tpr_at_threshold"] = float(pred[anomalous].mean()) if anomalous.any() else math.nan
    maps = result.anomaly_maps
    if maps is not None and len(maps) and 0 < labels.sum() < len(labels):
        # both poolings of the map, as the RD4AD code reports for novelty detection
        out["image_auroc_max_pool"] = metrics.auroc(labels, np.array([m.max() for m in maps]))
        out["image_auroc_mean_pool"] = metrics.auroc(labels, np.array([m.mean() for m in maps]))
    if images.has_masks and maps is not None and len(maps):
        # pixel metrics at one resolution: maps of other sizes are resized to the first one's
        shape = tuple(maps[0].shape)
        masks = np.stack([_mask_or_empty(images, i, shape) for i in range(len(images))])
        maps_arr = (maps if isinstance(maps, np.ndarray)
                    else np.stack([resize_map(m, shape) for m in maps]))
        if masks.any() and (~masks).any():
            out["pixel_auroc"] = metrics.pixel_auroc(masks, maps_arr)
            out["aupro"] = metrics.aupro(masks, maps_arr, fpr_limit=0.3)
            out["pro_rd4ad_per_image"] = metrics.per_image_pro_rd4ad(masks, maps_arr)
    return out


def _mask_or_empty(images: ImageSet, i: int, shape: tuple[int, ...]) -> np.ndarray:
    m = images.mask(i)
    if m is None:
        return np.zeros(shape, dtype=bool)
    if m.shape != shape:
        from distilad.report.overlay import resize_mask

        m = resize_mask(m, shape)
    return m


# --- validation inside fit -----------------------------------------------------------------------
SYNTHETIC = "synthetic"


def resolve_validation(validation: Any) -> ImageSet | str | None:
    """``fit``'s ``validation`` argument, checked before any training.

    ``"synthetic"`` (or True): synthetic defects of the held-out normals (returned as
    ``"synthetic"``). None, False or ``"none"``: no validation (None). Anything else is anomalous
    images (an ImageSet, array, folder, files): all of them, or, when they carry labels, the
    label-1 images only (so a labelled folder cannot pass its normal images off as anomalies).
    """
    if validation is None or validation is False or (isinstance(validation, str)
                                                     and validation.lower() == "none"):
        return None
    if validation is True or (isinstance(validation, str) and validation == SYNTHETIC):
        return SYNTHETIC
    images = as_image_set(validation, split="test")
    if images.labels is not None:
        anomalous = np.flatnonzero(np.asarray(images.labels) == 1)
        if len(anomalous) == 0:
            raise DataError(f"validation images {images.description!r} are labelled and none is "
                            "anomalous (label 1); give anomalous images, or 'synthetic'")
        if len(anomalous) < len(images):
            images = images.subset(anomalous)
    if len(images) == 0:
        raise DataError("validation: no anomalous images given; give some, or 'synthetic'")
    return images


def validation_report(detector: Detector, holdout: ImageSet, holdout_scores: np.ndarray,
                      holdout_maps: list[np.ndarray] | None, anomalies: ImageSet | str
                      ) -> dict[str, Any]:
    """Held-out normals (already scored for calibration: ``holdout_scores`` (N,), maps or None)
    against ``anomalies`` (``"synthetic"`` or an ImageSet from :func:`resolve_validation`).

    Returns ``{"kind": "synthetic-defects" | "given-anomalies", "n_normal", "n_anomalous",
    "metrics": <compute_metrics keys>, "seconds"}``; with synthetic defects the masks give pixel
    metrics too. Metrics that cannot be computed (e.g. non-finite scores) leave ``metrics`` empty
    and say why in ``"error"``.
    """
    t0 = time.perf_counter()
    seed = int(detector.params.get("seed", 0))
    if isinstance(anomalies, str):
        anomalous, kind = synthetic_defects(holdout, seed), "synthetic-defects"
    else:
        anomalous, kind = anomalies, "given-anomalies"
    a_scores, a_maps = detector._score(anomalous)
    vset = validation_set(holdout, anomalous, seed)
    scores = np.concatenate([np.asarray(holdout_scores, np.float64),
                             np.asarray(a_scores, np.float64)])
    maps = (None if holdout_maps is None or a_maps is None
            else list(holdout_maps) + list(a_maps))
    result = ScoreResult(image_scores=scores, anomaly_maps=maps, names=list(vset.names))
    if detector.calibration is not None:
        result.labels = detector.calibration.predict(scores)
    out: dict[str, Any] = {"kind": kind, "n_normal": len(holdout), "n_anomalous": len(anomalous)}
    try:
        out["metrics"] = compute_metrics(vset, result)
    except ValueError as e:  # e.g. NaN scores of a diverged model: fit still returns the model
        out["metrics"], out["error"] = {}, str(e)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out
