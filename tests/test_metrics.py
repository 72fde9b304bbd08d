"""Tests for distilad.metrics (checked against sklearn and brute-force references)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

try:
    from distilad import metrics
except ImportError:  # package not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from distilad import metrics

skm = pytest.importorskip("sklearn.metrics")


def _random_tied(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(size=n) + 0.7 * labels, 1)  # heavy ties
    return labels, scores


# ------------------------------------------------------------------------------------------
# image-level metrics
# ------------------------------------------------------------------------------------------


def test_auroc_hand_case() -> None:
    assert metrics.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # ties count 1/2: one positive tied with one negative, the other above both negatives
    assert metrics.auroc([0, 1, 0, 1], [0.5, 0.5, 0.1, 0.9]) == pytest.approx(0.875)
    assert metrics.auroc([False, True], [1.0, 0.0]) == 0.0
    assert metrics.auroc([0, 0, 1], [2, 2, 2]) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_ap_roc_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels, scores = _random_tied(rng, 2000)
    assert metrics.auroc(labels, scores) == pytest.approx(
        skm.roc_auc_score(labels, scores), abs=1e-12
    )
    assert metrics.average_precision(labels, scores) == pytest.approx(
        skm.average_precision_score(labels, scores), abs=1e-12
    )
    fpr, tpr, thr = metrics.roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert thr[0] == np.inf and fpr[0] == 0.0 and tpr[0] == 0.0
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0


def test_float32_and_continuous_scores_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(5000) < 0.1
    scores = (rng.normal(size=5000) + labels).astype(np.float32)
    assert metrics.auroc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores))
    assert metrics.average_precision(labels, scores) == pytest.approx(
        skm.average_precision_score(labels, scores)
    )


def test_one_class_raises() -> None:
    with pytest.raises(ValueError, match="one class"):
        metrics.auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="one class"):
        metrics.roc_curve([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError):
        metrics.average_precision([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="binary"):
        metrics.auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc([0, 1], [0.1, np.nan])


def test_average_precision_hand_case() -> None:
    # sorted desc: 0.8(1) 0.4(0) 0.35(1) 0.1(0): AP = 0.5*1 + 0.5*(2/3)
    ap = metrics.average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert ap == pytest.approx(0.5 + 1 / 3)


def test_f1_max_hand_case() -> None:
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    # threshold 0.3 -> TP 3, FP 1, FN 0 -> F1 = 6/7 (best); threshold 0.6 -> 0.5
    f1, thr = metrics.f1_max(labels, scores)
    assert f1 == pytest.approx(6 / 7)
    assert thr == pytest.approx(0.3)
    f1, thr = metrics.f1_max([0, 1, 1], [0.0, 1.0, 1.0])
    assert (f1, thr) == (1.0, 1.0)


def test_f1_max_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    labels, scores = _random_tied(rng, 500)
    best = max(skm.f1_score(labels, scores >= t) for t in np.unique(scores))
    f1, thr = metrics.f1_max(labels, scores)
    assert f1 == pytest.approx(best)
    assert skm.f1_score(labels, scores >= thr) == pytest.approx(best)


def test_pixel_auroc_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[1, 3:8, 4:9] = True
    masks[2, 10:14, 1:3] = True
    maps = np.round(rng.random(masks.shape) + 0.5 * masks, 2)
    expected = skm.roc_auc_score(masks.ravel(), maps.ravel())
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError):
        metrics.pixel_auroc(masks, maps[:2])


def test_auroc_large_input_fast() -> None:
    rng = np.random.default_rng(6)
    n = 2_000_000
    labels = rng.random(n) < 0.05
    scores = rng.random(n).astype(np.float32) + 0.2 * labels
    t0 = time.perf_counter()
    value = metrics.auroc(labels, scores)
    assert time.perf_counter() - t0 < 30.0
    assert 0.5 < value < 1.0


# ------------------------------------------------------------------------------------------
# AUPRO
# ------------------------------------------------------------------------------------------


def _aupro_brute_force(
    masks: np.ndarray, maps: np.ndarray, fpr_limit: float, thresholds: np.ndarray
) -> float:
    """Loop over thresholds; direct transcription of the definition."""
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in sorted(thresholds, reverse=True):
        pred = maps >= t
        fprs.append((pred & normal).sum() / normal.sum())
        overlaps = []
        for img_idx in range(len(masks)):
            lab, n = ndimage.label(masks[img_idx], structure=np.ones((3, 3)))
            for k in range(n):
                region = lab == k + 1
                overlaps.append((pred[img_idx] & region).sum() / region.sum())
        pros.append(float(np.mean(overlaps)))
    fprs.append(1.0)
    pros.append(1.0)
    x, y = np.array(fprs), np.array(pros)
    # integrate to fpr_limit with interpolation at the limit
    area = 0.0
    for i in range(len(x) - 1):
        x0, x1, y0, y1 = x[i], x[i + 1], y[i], y[i + 1]
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def _small_case() -> tuple[np.ndarray, np.ndarray]:
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, 0:2, 0:2] = True  # region of 4 pixels
    masks[1, 2:4, 1:4] = True  # region of 6 pixels
    masks[1, 0, 3] = True  # second region in image 1 (not 8-connected to the first)
    rng = np.random.default_rng(7)
    maps = np.round(rng.random(masks.shape) + 0.4 * masks, 1)  # ties on purpose
    return masks, maps  # image 2 is a good image


@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_exact_matches_brute_force(fpr_limit: float) -> None:
    masks, maps = _small_case()
    expected = _aupro_brute_force(masks, maps, fpr_limit, np.unique(maps))
    assert metrics.aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(expected)


def test_aupro_two_images_one_region_each() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 0, 0:3] = True
    maps = np.arange(32, dtype=float).reshape(2, 4, 4) % 7 / 7.0
    expected = _aupro_brute_force(masks, maps, 0.3, np.unique(maps))
    assert metrics.aupro(masks, maps) == pytest.approx(expected)


def test_aupro_fixed_thresholds_matches_brute_force() -> None:
    masks, maps = _small_case()
    thresholds = np.linspace(maps.min(), maps.max(), 11)
    expected = _aupro_brute_force(masks, maps, 0.3, thresholds)
    assert metrics.aupro(masks, maps, num_thresholds=11) == pytest.approx(expected)


def test_aupro_perfect_and_constant_maps() -> None:
    masks, _ = _small_case()
    assert metrics.aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    # constant map: single point (1, 1) -> line from (0, 0): PRO = FPR, area = limit^2 / 2
    const = np.zeros(masks.shape)
    assert metrics.aupro(masks, const, fpr_limit=0.3) == pytest.approx(0.15)
    assert metrics.aupro(masks, const, fpr_limit=1.0) == pytest.approx(0.5)
    # inverted map: regions only detected once every normal pixel is positive
    assert metrics.aupro(masks, (~masks).astype(float)) == pytest.approx(0.0)


def test_aupro_no_region_is_nan() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    assert np.isnan(metrics.aupro(masks, np.random.default_rng(0).random(masks.shape)))


def test_aupro_regions_use_8_connectivity() -> None:
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # one region (diagonal) of 2 pixels
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = 1.0  # half the region detected before any false positive
    # curve: (0,0) -> (0, 0.5) -> (1, 1): area over [0, 0.3] = 0.3*(0.5 + 0.65)/2
    assert metrics.aupro(masks, maps) == pytest.approx((0.5 + 0.65) / 2)


def test_aupro_mvtec_sized_is_fast() -> None:
    rng = np.random.default_rng(8)
    masks = np.zeros((83, 256, 256), dtype=bool)
    for i in range(0, 83, 2):
        y, x = rng.integers(0, 200, 2)
        masks[i, y : y + rng.integers(5, 50), x : x + rng.integers(5, 50)] = True
    maps = ndimage.gaussian_filter(rng.random(masks.shape).astype(np.float32), (0, 2, 2))
    maps += 0.05 * masks
    t0 = time.perf_counter()
    value = metrics.aupro(masks, maps)
    elapsed = time.perf_counter() - t0
    assert 0.0 < value <= 1.0
    assert elapsed < 30.0  # a guard against a quadratic algorithm, loose for busy machines
    coarse = metrics.aupro(masks, maps, num_thresholds=1000)
    assert coarse == pytest.approx(value, abs=0.02)


# ------------------------------------------------------------------------------------------
# RD4AD PRO
# ------------------------------------------------------------------------------------------


def _rd4ad_reference(masks: np.ndarray, amaps: np.ndarray, num_th: int = 200) -> float:
    """Loop transcription of hq-deng/RD4AD ``compute_pro`` (pandas/skimage removed)."""
    binary = np.zeros_like(amaps, dtype=bool)
    min_th, max_th = amaps.min(), amaps.max()
    delta = (max_th - min_th) / num_th
    rows = []
    for th in np.arange(min_th, max_th, delta):
        binary[amaps <= th] = 0
        binary[amaps > th] = 1
        pros = []
        for b, mask in zip(binary, masks, strict=True):
            lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
            for k in range(n):
                region = lab == k + 1
                pros.append(b[region].sum() / region.sum())
        inverse = 1 - masks
        fpr = np.logical_and(inverse, binary).sum() / inverse.sum()
        rows.append((np.mean(pros), fpr))
    pro, fpr = np.array(rows).T
    keep = fpr < 0.3
    pro, fpr = pro[keep], fpr[keep] / fpr[keep].max()
    return float(skm.auc(fpr, pro))


def test_rd4ad_pro_matches_reference() -> None:
    rng = np.random.default_rng(9)
    masks = np.zeros((3, 12, 12), dtype=int)
    masks[0, 2:6, 3:8] = 1
    masks[0, 9:11, 9:11] = 1
    masks[1, 5:9, 0:4] = 1
    maps = ndimage.gaussian_filter(rng.random(masks.shape), (0, 1, 1)) + 0.2 * masks
    # whole set in one compute_pro call
    expected_set = _rd4ad_reference(masks, maps, 50)
    got_set = metrics.per_image_pro_rd4ad(masks, maps, num_thresholds=50, per_image=False)
    assert got_set == pytest.approx(expected_set, abs=1e-12)
    # official evaluation(): one call per anomalous image, then the mean
    expected = np.mean([_rd4ad_reference(masks[i : i + 1], maps[i : i + 1]) for i in (0, 1)])
    assert metrics.per_image_pro_rd4ad(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_rd4ad_pro_perfect_map_and_runtime() -> None:
    rng = np.random.default_rng(10)
    masks = np.zeros((83, 256, 256), dtype=bool)
    for i in range(0, 83, 2):
        y, x = rng.integers(0, 200, 2)
        masks[i, y : y + rng.integers(5, 50), x : x + rng.integers(5, 50)] = True
    perfect = np.where(masks, 0.5 + 0.5 * rng.random(masks.shape), 0.5 * rng.random(masks.shape))
    assert metrics.per_image_pro_rd4ad(masks, perfect) == pytest.approx(1.0, abs=1e-3)
    assert metrics.per_image_pro_rd4ad(masks, masks.astype(float)) == pytest.approx(1.0)
    noisy = perfect + rng.normal(scale=0.3, size=masks.shape)
    t0 = time.perf_counter()
    value = metrics.per_image_pro_rd4ad(masks, noisy)
    value_set = metrics.per_image_pro_rd4ad(masks, noisy, per_image=False)
    assert time.perf_counter() - t0 < 60.0
    assert 0.0 < value < 1.0 and 0.0 < value_set < 1.0
    assert np.isnan(metrics.per_image_pro_rd4ad(np.zeros((1, 4, 4)), np.ones((1, 4, 4))))
