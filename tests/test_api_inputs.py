"""The Python API never returns a silently wrong answer: array layouts and value ranges are
accepted exactly as documented (distilad.data.base) or refused with how to pass them; the
threshold API (calibrate, threshold, F1-max, scikit-learn names) and saved-model details."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import distilad
from distilad.data import ArrayImageSet, as_image_set
from distilad.errors import CalibrationWarning, DataError, DistiladError

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (5, 20, 24), dtype=np.uint8)
RGB = RNG.integers(0, 256, (5, 20, 24, 3), dtype=np.uint8)


# --- accepted layouts -----------------------------------------------------------------------------
@pytest.mark.parametrize("make,shape", [
    (lambda: GRAY, (20, 24, 1)),
    (lambda: RGB, (20, 24, 3)),
    (lambda: RGB.transpose(0, 3, 1, 2), (20, 24, 3)),  # NCHW
    (lambda: np.concatenate([RGB, RGB[..., :1]], axis=-1), (20, 24, 3)),  # RGBA: alpha dropped
    (lambda: GRAY[:1], (20, 24, 1)),  # one gray image as (1, H, W)
    (lambda: RGB[0][None], (20, 24, 3)),  # one colour image, as the refusal says
    (lambda: list(RGB), (20, 24, 3)),
    (lambda: list(GRAY), (20, 24, 1)),
    (lambda: torch.from_numpy(RGB.transpose(0, 3, 1, 2).astype(np.float32) / 255), (20, 24, 3)),
    (lambda: torch.from_numpy(RGB.astype(np.float32) / 255).to(torch.bfloat16), (20, 24, 3)),
    (lambda: [torch.from_numpy(g) for g in GRAY], (20, 24, 1)),
    (lambda: (RGB / 255.0).astype(np.float64), (20, 24, 3)),
])
def test_accepted_layouts(make, shape) -> None:
    images = as_image_set(make())
    first = images.image(0)
    assert first.shape == shape and first.dtype == np.float32
    want = RGB[0] if shape[-1] == 3 else GRAY[0, ..., None]
    np.testing.assert_allclose(first, want / 255.0, atol=4e-3)  # bfloat16 rounds to 3 digits


def test_layout_argument_resolves_ambiguity() -> None:
    three_gray = RNG.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    with pytest.raises(DataError):
        ArrayImageSet(three_gray)
    s = ArrayImageSet(three_gray, layout="NHW")
    assert len(s) == 3 and s.image(2).shape == (8, 8, 1)
    tiny = RNG.random((2, 3, 4, 4)).astype(np.float32)  # 4x4 RGB, channels first? or last?
    assert ArrayImageSet(tiny, layout="NCHW").image(0).shape == (4, 4, 3)
    assert ArrayImageSet(tiny, layout="NHWC").image(0).shape == (3, 4, 3)  # RGBA, alpha dropped


# --- refused inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("make,fragment", [
    (lambda: RGB[0], "Pass x[None] for one image"),  # one (H, W, 3) image
    (lambda: RGB[0, ..., :1], "Pass x[None] for one image"),  # one (H, W, 1) image
    (lambda: RGB[0].transpose(2, 0, 1), "one (3, 20, 24) channels-first image"),
    (lambda: GRAY[0], "a 2-D array (20, 24) is one gray image"),
    (lambda: RNG.random((2, 3, 8, 3)), "channels could be axis 1 (3) or axis 3 (3)"),
    (lambda: RNG.random((2, 8, 8, 5)), "needs 1, 3 or 4 channels on axis 1"),
    (lambda: RNG.random((2, 2, 8, 8, 3)), "expected (N, H, W), (N, H, W, C) or (N, C, H, W)"),
    (lambda: np.zeros((0, 8, 8, 3), np.uint8), "no images"),
    (lambda: RGB.astype(np.float32), "divide 0..255 values by 255 (x / 255) or pass uint8"),
    (lambda: RGB.astype(np.float32) * 4, "scale them to [0, 1]"),
    (lambda: RGB.astype(np.float32) / 127.5 - 1, "for [-1, 1] images pass (x + 1) / 2"),
    (lambda: np.where(RGB > 250, np.nan, RGB / 255.0), "non-finite value(s) (NaN or inf)"),
    (lambda: np.full((2, 8, 8, 3), np.inf), "non-finite"),
    (lambda: RGB.astype(np.int64), "pass uint8 (0..255), uint16 (0..65535) or floats"),
    (lambda: RGB.astype(object), "pass uint8, uint16 or float arrays"),
    (lambda: torch.from_numpy(RGB.astype(np.float32)), "divide 0..255 values by 255"),
    (lambda: torch.full((2, 3, 8, 8), float("nan")), "non-finite"),
    (lambda: [RGB[0], RGB[1].transpose(2, 0, 1)], "list item 1 has shape (3, 20, 24)"),
    (lambda: [RGB[0], "a.png"], "list item 1 is a str"),
    (lambda: [RGB[0].astype(np.float32)], "image 0 must be in [0, 1]"),
    (lambda: [], "no images given"),
    (lambda: {"a": 1}, "cannot use dict as images"),
])
def test_refused_inputs(make, fragment) -> None:
    with pytest.raises(DataError) as e:
        as_image_set(make())
    assert fragment in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)  # as numpy would raise for a bad array


def test_float_rounding_noise_is_not_refused() -> None:
    x = np.clip(RGB / 255.0, 0, 1) * (1 + 1e-7)
    assert as_image_set(x).image(0).max() <= 1.0


# --- a tiny fitted detector ----------------------------------------------------------------------
def _normals(n: int, seed: int) -> np.ndarray:
    """Smooth gray-blue images (N, 16, 16, 3) uint8: the normal class."""
    rng = np.random.default_rng(seed)
    base = np.linspace(60, 120, 16)[None, :, None, None] + rng.normal(0, 4, (n, 16, 16, 3))
    base[..., 2] += 40
    return np.clip(base, 0, 255).astype(np.uint8)


def _anomalies(n: int, seed: int) -> np.ndarray:
    """Normals with a bright square: what the tiny model should score higher."""
    x = _normals(n, seed + 1000)
    x[:, 4:12, 4:12] = 255
    return x


@pytest.fixture(scope="module")
def det() -> distilad.Detector:
    d = distilad.create_detector("edegan", image_size=16, width=8, nz=8, epochs=3, batch_size=16,
                                 device="cpu", progress=False, holdout_fraction=0.25,
                                 target_fpr=0.1, score="reconstruction")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return d.fit(_normals(40, 0), validation=None)


def test_score_refuses_what_would_be_wrong(det: distilad.Detector) -> None:
    one = _normals(1, 5)[0]
    with pytest.raises(DataError, match=r"Pass x\[None\]"):
        det.score(one)
    assert det.score(one[None]).image_scores.shape == (1,)
    with pytest.raises(DataError, match="divide 0..255"):
        det.score(_normals(3, 5).astype(np.float32))
    nan = _normals(3, 5) / 255.0
    nan[1, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="first in image 1"):
        det.predict(nan)
    # the same images as uint8, float in [0, 1] and NCHW tensor score the same
    x = _normals(4, 6)
    a = det.score(x).image_scores
    b = det.score(x / 255.0).image_scores
    c = det.score(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).image_scores
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(a, c, rtol=1e-5)
    assert len(set(np.round(a, 7))) > 1  # not all equal (the clipped-0..255 symptom)


def test_few_holdout_images_warn_with_numbers() -> None:
    d = distilad.create_detector("edegan", image_size=16, width=2, nz=2, epochs=1, device="cpu",
                                 progress=False)
    with pytest.warns(CalibrationWarning, match=r"1 held-out normal images cannot back "
                                                r"target_fpr=0.01 .*1/1 = 1"):
        d.fit(_normals(8, 1), validation=None)
    assert d.calibration.n_holdout == 1


def test_sklearn_names(det: distilad.Detector) -> None:
    x = np.concatenate([_normals(6, 7), _anomalies(6, 7)])
    res = det.score(x)
    np.testing.assert_array_equal(det.score_samples(x), -res.image_scores)
    dec = det.decision_function(x)
    np.testing.assert_allclose(dec, det.threshold - res.image_scores)
    # negative = outlier, exactly where predict says 1
    np.testing.assert_array_equal(dec < 0, det.predict(x) == 1)
    params = det.get_params()
    assert params["epochs"] == 3 and params["image_size"] == 16
    params["epochs"] = 99
    assert det.params["epochs"] == 3  # a copy


def test_threshold_get_set_and_save_load(det: distilad.Detector, tmp_path: Path) -> None:
    d = distilad.load_detector(det.save(tmp_path / "a.distilad"), device="cpu")
    x = np.concatenate([_normals(6, 8), _anomalies(6, 8)])
    s = d.score(x).image_scores
    new = float(np.median(s[6:]))
    d.threshold = new
    assert d.threshold == new and d.calibration.strategy == "manual"
    res = d.score(x)
    np.testing.assert_array_equal(res.labels, (s > new).astype(int))
    np.testing.assert_array_equal(res.normalized_scores > 0.5, s > new)
    with pytest.raises(DistiladError, match="not above the median normal score"):
        d.threshold = d.calibration.median - 1
    back = distilad.load_detector(d.save(tmp_path / "b.distilad"), device="cpu")
    assert back.threshold == new and back.calibration == d.calibration
    np.testing.assert_array_equal(back.predict(x), res.labels)


def test_calibrate_on_new_normals(det: distilad.Detector, tmp_path: Path) -> None:
    d = distilad.load_detector(det.save(tmp_path / "c.distilad"), device="cpu")
    fresh = _normals(50, 9)
    scores = np.sort(d.score(fresh).image_scores)
    assert d.calibrate(fresh, target_fpr=0.1) is d
    # at most 10 % of the 50 new normals above: the 45th smallest score
    assert d.threshold == pytest.approx(scores[44]) and d.params["target_fpr"] == 0.1
    assert d.calibration.n_holdout == 50 and d.predict(fresh).sum() == 5
    d.calibrate(fresh, target_fpr=0.2)
    assert d.threshold == pytest.approx(scores[39]) and d.get_params()["target_fpr"] == 0.2
    assert d.fit_info["calibration"]["n_images"] == 50
    # labelled data: only its normals are used
    labelled = ArrayImageSet(np.concatenate([fresh, _anomalies(5, 9)]), labels=[0] * 50 + [1] * 5)
    d.calibrate(labelled, target_fpr=0.2)
    assert d.threshold == pytest.approx(scores[39])
    with pytest.raises(DistiladError, match="target_fpr must be a number in"):
        d.calibrate(fresh, target_fpr=1.0)
    with pytest.raises(DistiladError, match="strategy must be one of"):
        d.calibrate(fresh, strategy="youden")
    back = distilad.load_detector(d.save(tmp_path / "d.distilad"), device="cpu")
    assert back.threshold == d.threshold and back.params["target_fpr"] == 0.2


def test_calibrate_f1_max(det: distilad.Detector, tmp_path: Path) -> None:
    from distilad.metrics import f1_max

    d = distilad.load_detector(det.save(tmp_path / "e.distilad"), device="cpu")
    x = np.concatenate([_normals(20, 10), _anomalies(10, 10)])
    y = np.array([0] * 20 + [1] * 10)
    s = d.score(x).image_scores
    d.calibrate(x, labels=y, strategy="f1_max")
    best, flagged_from = f1_max(y, s)
    assert d.calibration.strategy == "f1_max" and d.calibration.f1 == pytest.approx(best)
    # the threshold flags exactly the images F1-max flags (score >= flagged_from)
    np.testing.assert_array_equal(d.predict(x), (s >= flagged_from).astype(int))
    f1 = 2 * np.sum(d.predict(x) * y) / (d.predict(x).sum() + y.sum())
    assert f1 == pytest.approx(best)
    with pytest.raises(DataError, match="needs labelled images"):
        d.calibrate(x, strategy="f1_max")
    with pytest.raises(DistiladError, match="normal .0. and anomalous .1."):
        d.calibrate(x[:20], labels=y[:20], strategy="f1_max")
    with pytest.raises(DataError, match="29 labels for 30 images"):
        d.calibrate(x, labels=y[:-1], strategy="f1_max")
    back = distilad.load_detector(d.save(tmp_path / "f.distilad"), device="cpu")
    assert back.calibration == d.calibration


def test_model_file_permissions_follow_umask(det: distilad.Detector, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = det.save(tmp_path / "perm.distilad")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob("*.tmp"))


def test_threshold_change_drops_stale_validation_rates(det: distilad.Detector,
                                                        tmp_path: Path) -> None:
    d = distilad.load_detector(det.save(tmp_path / "v.distilad"), device="cpu")
    d.fit_info["validation"] = {"kind": "synthetic-defects", "metrics": {
        "image_auroc": 0.9, "fpr_at_threshold": 0.1, "tpr_at_threshold": 0.8}}
    d.threshold = d.threshold * 1.5 + 1e-3
    val = d.fit_info["validation"]
    assert val["metrics"] == {"image_auroc": 0.9} and "threshold changed" in val["note"]
