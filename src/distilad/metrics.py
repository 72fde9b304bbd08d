"""Evaluation metrics for anomaly detection and localisation.

Conventions used by every function in this module:

* labels / masks: ``1`` / ``True`` means *anomalous*, ``0`` / ``False`` means normal;
* scores / maps: a higher value means *more anomalous*;
* a sample is predicted anomalous at threshold ``t`` when ``score >= t``
  (except in :func:`per_image_pro_rd4ad`, which reproduces the official RD4AD code and
  therefore uses ``score > t``).

Only numpy and scipy are used; everything is a pure function. The curve-based metrics sort the
scores once (``O(n log n)``) and work on integer cumulative counts, so they are exact with ties
and cope with 10^7+ values (e.g. pixel-level metrics on a whole MVTec AD category).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = [
    "roc_curve",
    "auroc",
    "pixel_auroc",
    "average_precision",
    "f1_max",
    "aupro",
    "per_image_pro_rd4ad",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _binary_labels(labels: ArrayLike) -> np.ndarray:
    """Flatten ``labels`` to a 1-D bool array (True = anomalous); values must be 0/1."""
    y = np.asarray(labels).ravel()
    if y.dtype == np.bool_:
        return y
    if y.size and not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be binary (0/1 or bool, 1/True = anomalous)")
    return y != 0


def _float_scores(scores: ArrayLike) -> np.ndarray:
    """Flatten ``scores`` to a 1-D float array (float32 kept as is to save memory)."""
    s = np.asarray(scores).ravel()
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s


def _clf_counts(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative false/true positive counts at every distinct score, highest first.

    Args:
        labels: shape (n,) (any shape, flattened), binary, 1 = anomalous.
        scores: shape (n,), same number of elements as ``labels``.

    Returns:
        ``(fps, tps, thresholds)``, each of shape (d,) where d = number of distinct scores;
        ``thresholds`` is strictly decreasing and ``fps[i]`` / ``tps[i]`` count the negatives /
        positives with ``score >= thresholds[i]`` (int64). Same as sklearn's
        ``_binary_clf_curve`` without sample weights.
    """
    y = _binary_labels(labels)
    s = _float_scores(scores)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in size: {y.size} vs {s.size}")
    if s.size == 0:
        raise ValueError("labels and scores are empty")
    order = np.argsort(s)[::-1]  # descending; ties are grouped below, so stability is moot
    s_sorted = s[order]
    tps_all = np.cumsum(y[order], dtype=np.int64)
    del order
    last = np.flatnonzero(np.diff(s_sorted))  # last index of each tie group except the last
    last = np.append(last, s_sorted.size - 1)
    tps = tps_all[last]
    fps = (last + 1) - tps
    return fps, tps, s_sorted[last]


def _require_both_classes(n_pos: int, n_neg: int, what: str) -> None:
    if n_pos == 0 or n_neg == 0:
        present = "anomalous (1)" if n_pos else "normal (0)"
        raise ValueError(
            f"{what} is undefined when only one class is present "
            f"(all {n_pos + n_neg} labels are {present})"
        )


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid rule ``sum((x[i+1]-x[i]) * (y[i+1]+y[i]) / 2)``; x, y shape (n,)."""
    if x.size < 2:
        return 0.0
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def _trapezoid_until(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the piecewise-linear curve (x, y) for x in [x[0], x_max].

    ``x`` (shape (n,)) must be non-decreasing; ``y`` has shape (n,). If ``x_max`` falls inside
    a segment, ``y`` is linearly interpolated at ``x_max`` (as in MVTec AD's ``trapezoid``).
    """
    ins = int(np.searchsorted(x, x_max, side="right"))  # x[:ins] <= x_max < x[ins:]
    area = _trapezoid(x[:ins], y[:ins])
    if 0 < ins < x.size and x[ins - 1] < x_max:
        x0, x1, y0, y1 = x[ins - 1], x[ins], y[ins - 1], y[ins]
        y_interp = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y_interp + y0) * (x_max - x0)
    return float(area)


def _check_masks_maps(masks: ArrayLike, maps: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, H, W) masks and maps; returns (bool masks, float maps)."""
    m = np.asarray(masks)
    a = np.asarray(maps)
    if m.ndim != 3 or a.ndim != 3:
        raise ValueError(f"masks and maps must be (N, H, W); got {m.shape} and {a.shape}")
    if m.shape != a.shape:
        raise ValueError(f"masks and maps differ in shape: {m.shape} vs {a.shape}")
    if m.dtype != np.bool_:
        if m.size and not np.all((m == 0) | (m == 1)):
            raise ValueError("masks must be binary (0/1 or bool, 1/True = anomalous)")
        m = m != 0
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if np.isnan(a).any():
        raise ValueError("maps contain NaN")
    return m, a


def _label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of each (H, W) mask, numbered uniquely across the set.

    Args:
        masks: (N, H, W) bool.

    Returns:
        ``(labeled, n)``: labeled is (N, H, W) int32, 0 = background, 1..n = region ids;
        components never cross image boundaries.
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connectivity within each image, none across images
    labeled, n = ndimage.label(masks, structure=structure)
    return labeled, int(n)


# --------------------------------------------------------------------------------------------
# image-level (or flattened pixel-level) metrics
# --------------------------------------------------------------------------------------------


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic curve.

    Equivalent to ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``: one
    point per distinct score value (ties form a single point), preceded by ``(0, 0)``.

    Args:
        labels: shape (n,) (any shape, flattened), binary, 1/True = anomalous.
        scores: shape (n,), higher = more anomalous.

    Returns:
        ``(fpr, tpr, thresholds)``, each of shape (d + 1,) with d the number of distinct
        scores. ``thresholds`` is strictly decreasing, ``thresholds[0] = inf`` and
        ``fpr[i]`` / ``tpr[i]`` are the rates when predicting ``score >= thresholds[i]``.

    Raises:
        ValueError: if only one class is present.
    """
    fps, tps, thr = _clf_counts(labels, scores)
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    _require_both_classes(n_pos, n_neg, "the ROC curve")
    fpr = np.concatenate(([0.0], fps / n_neg))
    tpr = np.concatenate(([0.0], tps / n_pos))
    thresholds = np.concatenate(([np.inf], thr.astype(np.float64)))
    return fpr, tpr, thresholds


def auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos * n_neg)); ties count 1/2.

    Computed exactly from integer counts after a single sort (rank-based, O(n log n)); memory
    is a few arrays of n elements, so 10^7+ values (pixel AUROC) are fine.

    Args:
        labels: shape (n,) (any shape, flattened), binary, 1/True = anomalous.
        scores: shape (n,), higher = more anomalous.

    Returns:
        AUROC in [0, 1]; same value as ``sklearn.metrics.roc_auc_score``.

    Raises:
        ValueError: if only one class is present.
    """
    fps, tps, _ = _clf_counts(labels, scores)
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    _require_both_classes(n_pos, n_neg, "AUROC")
    pos_g = np.diff(tps, prepend=0)  # positives in each tie group
    neg_g = np.diff(fps, prepend=0)  # negatives in each tie group
    below = n_neg - fps  # negatives strictly below each group
    # 2 * U, kept in int64 (exact): each positive beats `below` negatives, ties count 1/2
    twice_u = 2 * np.dot(pos_g, below) + np.dot(pos_g, neg_g)
    return float(twice_u / (2.0 * n_pos * n_neg))


def pixel_auroc(masks: ArrayLike, maps: ArrayLike) -> float:
    """Pixel-level AUROC over a whole set of images.

    Args:
        masks: (N, H, W) bool / 0-1 ground truth, True = anomalous pixel.
        maps: (N, H, W) float anomaly maps, higher = more anomalous.

    Returns:
        AUROC of all N*H*W pixels pooled together.
    """
    m, a = _check_masks_maps(masks, maps)
    return auroc(m.ravel(), a.ravel())


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision, as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over distinct thresholds (highest first, R_0 = 0);
    step-wise, no interpolation.

    Args:
        labels: shape (n,) (any shape, flattened), binary, 1/True = anomalous.
        scores: shape (n,), higher = more anomalous.

    Returns:
        AP in [0, 1] (1.0 when every label is anomalous).

    Raises:
        ValueError: if there is no anomalous label (AP is undefined).
    """
    fps, tps, _ = _clf_counts(labels, scores)
    n_pos = int(tps[-1])
    if n_pos == 0:
        raise ValueError("average precision is undefined without anomalous (1) labels")
    precision = tps / (tps + fps)
    recall_gain = np.diff(tps, prepend=0) / n_pos
    return float(np.sum(recall_gain * precision))


def f1_max(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Best F1 score over all thresholds.

    Candidate thresholds are the distinct score values; a sample is predicted anomalous when
    ``score >= threshold``. On a tie in F1 the highest threshold is returned.

    Args:
        labels: shape (n,) (any shape, flattened), binary, 1/True = anomalous.
        scores: shape (n,), higher = more anomalous.

    Returns:
        ``(best_f1, threshold)``.

    Raises:
        ValueError: if there is no anomalous label.
    """
    fps, tps, thr = _clf_counts(labels, scores)
    n_pos = int(tps[-1])
    if n_pos == 0:
        raise ValueError("F1 is undefined without anomalous (1) labels")
    f1 = 2.0 * tps / (tps + fps + n_pos)  # 2TP / (2TP + FP + FN)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thr[best])


# --------------------------------------------------------------------------------------------
# localisation: PRO
# --------------------------------------------------------------------------------------------


def aupro(
    masks: ArrayLike,
    maps: ArrayLike,
    fpr_limit: float = 0.3,
    num_thresholds: int | None = None,
) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (MVTec AD / anomalib definition).

    Regions are the 8-connected components of every ground-truth mask (each image labelled
    separately). For a threshold ``t`` (pixel anomalous when ``map >= t``):

    * PRO(t) = mean over *all* regions of the dataset of
      ``|{p in region : map[p] >= t}| / |region|``;
    * FPR(t) = fraction of all normal pixels (mask == 0, in every image, good images included)
      with ``map >= t``.

    The curve, completed with (0, 0) and (1, 1), is integrated with the trapezoid rule over
    FPR in [0, fpr_limit] (PRO linearly interpolated at exactly ``fpr_limit``) and divided by
    ``fpr_limit``, as in MVTec AD's ``evaluate_experiment.py`` (``compute_pro`` +
    ``trapezoid``). The only difference is that FPRs are accumulated in float64 instead of
    float32.

    Args:
        masks: (N, H, W) bool / 0-1 ground truth, True = anomalous pixel.
        maps: (N, H, W) float anomaly maps, higher = more anomalous.
        fpr_limit: upper integration limit, in (0, 1].
        num_thresholds: ``None`` for the exact curve (every distinct map value is a
            threshold; one sort of all pixels plus cumulative sums). An int uses that many
            thresholds evenly spaced between the global min and max of ``maps``.

    Returns:
        AUPRO in [0, 1]; ``nan`` if there is no anomalous region or no normal pixel.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if num_thresholds is not None and num_thresholds < 1:
        raise ValueError(f"num_thresholds must be a positive int or None, got {num_thresholds}")
    m, a = _check_masks_maps(masks, maps)
    labeled, n_regions = _label_regions(m)
    n_normal = int(m.size - np.count_nonzero(m))
    if n_regions == 0 or n_normal == 0:
        return float("nan")

    # Per-pixel increments: 1 for a normal pixel (FP count), 1 / (|region| * n_regions) for a
    # pixel of a region (so that the cumulative sum is directly the mean overlap).
    lab = labeled.ravel()
    sizes = np.bincount(lab, minlength=n_regions + 1).astype(np.float64)
    weight = np.zeros(n_regions + 1)
    weight[1:] = 1.0 / (sizes[1:] * n_regions)
    scores = a.ravel()

    order = np.argsort(scores)[::-1]  # descending
    s_sorted = scores[order]
    lab_sorted = lab[order]
    del order
    fp_cum = np.cumsum(lab_sorted == 0, dtype=np.int64)
    pro_cum = np.cumsum(weight[lab_sorted])
    del lab_sorted

    if num_thresholds is None:
        # last pixel of every tie group: all pixels with score >= that value are counted
        idx = np.append(np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1)
        fprs = fp_cum[idx] / n_normal
        pros = pro_cum[idx]
    else:
        lo, hi = float(s_sorted[-1]), float(s_sorted[0])
        thresholds = np.linspace(hi, lo, num_thresholds)  # descending
        # number of pixels with score >= t; s_sorted is descending so search its negation
        count = np.searchsorted(-s_sorted, -thresholds, side="right")
        fp_ext = np.concatenate(([0], fp_cum))
        pro_ext = np.concatenate(([0.0], pro_cum))
        fprs = fp_ext[count] / n_normal
        pros = pro_ext[count]
    np.clip(pros, None, 1.0, out=pros)
    fprs = np.concatenate(([0.0], fprs, [1.0]))
    pros = np.concatenate(([0.0], pros, [1.0]))
    return _trapezoid_until(fprs, pros, fpr_limit) / fpr_limit


def _rd4ad_compute_pro(
    masks: np.ndarray, amaps: np.ndarray, num_th: int, fpr_limit: float
) -> float:
    """Vectorised equivalent of ``compute_pro`` in hq-deng/RD4AD ``test.py``, for one call.

    Args:
        masks: (n, H, W) bool ground truth with at least one normal pixel.
        amaps: (n, H, W) float anomaly maps.
        num_th: number of thresholds (``np.arange(min, max, (max - min) / num_th)``).
        fpr_limit: keep thresholds with ``fpr < fpr_limit``.

    Returns:
        The normalised PRO AUC, or nan where the official code would fail (constant maps, no
        region, fewer than two kept thresholds).
    """
    labeled, n_regions = _label_regions(masks)
    n_normal = int(masks.size - np.count_nonzero(masks))
    min_th, max_th = amaps.min(), amaps.max()
    if n_regions == 0 or n_normal == 0 or not max_th > min_th:
        return float("nan")
    delta = (max_th - min_th) / num_th
    th = np.arange(min_th, max_th, delta)  # exactly the official thresholds (may be num_th + 1)
    k = th.size
    # pixel p is "on" at threshold th[j] (official: amap > th) iff j < b[p]
    b = np.searchsorted(th, amaps.ravel(), side="left")
    lab = labeled.ravel()
    hist = np.bincount(lab * (k + 1) + b, minlength=(n_regions + 1) * (k + 1))
    hist = hist.reshape(n_regions + 1, k + 1)
    # above[r, j] = #pixels of region r (0 = normal) with b > j, i.e. amap > th[j]
    above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    sizes = hist.sum(axis=1)
    pros = np.mean(above[1:] / sizes[1:, None], axis=0)
    fprs = above[0] / n_normal
    keep = fprs < fpr_limit
    if np.count_nonzero(keep) < 2:
        return float("nan")  # sklearn.metrics.auc needs two points
    fprs, pros = fprs[keep], pros[keep]
    max_fpr = fprs.max()
    if max_fpr == 0:
        # official code: 0 / 0 -> NaN FPRs and sklearn.auc raises; perfect separation here
        return float(pros.max())
    fprs = fprs / max_fpr
    # thresholds increase -> fprs are non-increasing; reverse for an increasing x axis
    return _trapezoid(fprs[::-1], pros[::-1])


def per_image_pro_rd4ad(
    masks: ArrayLike,
    maps: ArrayLike,
    fpr_limit: float = 0.3,
    num_thresholds: int = 200,
    *,
    per_image: bool = True,
) -> float:
    """The "AUPRO" reported by the official RD4AD code (``compute_pro`` in hq-deng/RD4AD).

    Official procedure, reproduced here (vectorised, same thresholds and comparisons):

    * thresholds ``np.arange(min, max, (max - min) / num_thresholds)`` over the maps passed
      to ``compute_pro``; a pixel is anomalous when ``map > threshold`` (strict);
    * regions: 8-connected components of each mask (``skimage.measure.label`` default);
      PRO = mean over regions of the overlap fraction; FPR = false-positive pixels / normal
      pixels of the maps passed;
    * keep thresholds with ``fpr < fpr_limit`` (strict), divide the kept FPRs by their max,
      AUC by the trapezoid rule (``sklearn.metrics.auc``).

    The official ``evaluation()`` calls ``compute_pro`` *once per anomalous test image*
    (min/max, FPR and the rescaling are all per image) and reports the mean over those
    images; that is what ``per_image=True`` (default) does. ``per_image=False`` applies
    ``compute_pro`` once to the whole set (global min/max, FPR over all normal pixels of all
    images, good images included). Either way this differs from :func:`aupro`: coarse
    thresholds, strict ``>``, the curve is not interpolated at ``fpr_limit`` and the FPR axis
    is rescaled by the largest kept FPR rather than by ``fpr_limit``.

    Deviations, only where the official code would crash: images whose mask has no normal
    pixel are skipped (official: assertion error); if every kept FPR is 0 the maximum kept PRO
    is returned (official: 0/0 then ``auc`` raises), so a perfect map scores 1.0; a call with
    constant maps or fewer than two kept thresholds yields nan (ignored in the per-image mean).

    Args:
        masks: (N, H, W) bool / 0-1 ground truth, True = anomalous pixel.
        maps: (N, H, W) float anomaly maps, higher = more anomalous.
        fpr_limit: FPR cut-off (0.3 in the official code).
        num_thresholds: number of thresholds (200 in the official code).
        per_image: see above.

    Returns:
        The RD4AD PRO score; ``nan`` if no image has an anomalous region.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if num_thresholds < 1:
        raise ValueError(f"num_thresholds must be >= 1, got {num_thresholds}")
    m, a = _check_masks_maps(masks, maps)
    if not per_image:
        return _rd4ad_compute_pro(m, a, num_thresholds, fpr_limit)
    values = [
        _rd4ad_compute_pro(m[i : i + 1], a[i : i + 1], num_thresholds, fpr_limit)
        for i in range(m.shape[0])
        if m[i].any() and not m[i].all()
    ]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")
