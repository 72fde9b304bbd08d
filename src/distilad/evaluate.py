"""Scoring a fitted detector on a labelled test set: metrics, and what the reports need."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from distilad import metrics
from distilad.data import ImageSet, as_image_set
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
        masks = np.stack([_mask_or_empty(images, i, maps[i].shape) for i in range(len(images))])
        maps_arr = np.stack(list(maps)) if isinstance(maps, list) else maps
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
