"""Tests of the threshold and normalisation calibrated on held-out normal scores."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from distilad.calibration import Calibration
from distilad.errors import CalibrationWarning, DistiladError

# most cases here use fewer held-out scores than 1/target_fpr on purpose; the warning itself is
# tested in test_warns_when_holdout_cannot_back_target
pytestmark = pytest.mark.filterwarnings("ignore::distilad.errors.CalibrationWarning")


@pytest.mark.parametrize("n", [1, 7, 10, 100, 1000])
@pytest.mark.parametrize("target", [0.0, 0.01, 0.05, 0.1, 0.33])
def test_threshold_keeps_holdout_fpr_at_most_target(n: int, target: float) -> None:
    scores = np.random.default_rng(n).normal(size=n)
    cal = Calibration.from_holdout(scores, target_fpr=target)
    above = int(cal.predict(scores).sum())
    assert above / n <= target + 1e-12
    # ... and as many as allowed: exactly floor(target * n) for distinct scores
    assert above == math.floor(target * n)
    assert cal.holdout_fpr == pytest.approx(above / n)
    assert cal.n_holdout == n and cal.target_fpr == target
    if n > 1:  # the threshold is one of the held-out scores (an order statistic)
        assert np.isclose(scores, cal.threshold, rtol=0, atol=0).any()
    else:  # a single score is its own median: the degenerate rule lifts the threshold above it
        assert cal.threshold > scores[0]


def test_threshold_values_by_hand() -> None:
    s = np.arange(1.0, 11.0)  # 1..10
    assert Calibration.from_holdout(s, target_fpr=0.01).threshold == 10.0  # max: none above
    assert Calibration.from_holdout(s, target_fpr=0.1).threshold == 9.0  # one above
    assert Calibration.from_holdout(s, target_fpr=0.25).threshold == 8.0  # floor(2.5) = 2 above
    cal = Calibration.from_holdout(s[::-1], target_fpr=0.2)  # order does not matter
    assert cal.threshold == 8.0 and cal.median == 5.5
    np.testing.assert_array_equal(cal.predict([7.9, 8.0, 8.01, 100]), [0, 0, 1, 1])
    assert cal.predict([8.5]).dtype == np.int64


def test_normalize_maps_threshold_to_half_and_median_to_zero() -> None:
    rng = np.random.default_rng(3)
    s = rng.gamma(2.0, size=101)
    cal = Calibration.from_holdout(s, target_fpr=0.05)
    med, thr = float(np.median(s)), cal.threshold
    assert cal.median == pytest.approx(med)
    out = cal.normalize(np.array([med, thr, med + 2 * (thr - med), med + 0.5 * (thr - med),
                                  med - 10.0, thr + 1e6]))
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0, 0.25, 0.0, 1.0], atol=1e-12)
    # monotone, in [0, 1], and on the same side of 0.5 as predict()
    grid = np.linspace(s.min() - 1, s.max() + 1, 500)
    n = cal.normalize(grid)
    assert (np.diff(n) >= 0).all() and n.min() >= 0 and n.max() <= 1
    np.testing.assert_array_equal(n > 0.5, cal.predict(grid) == 1)


def test_map_scale_from_holdout_maps() -> None:
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    maps = np.stack([np.full((4, 4), v) for v in (0.1, 0.2, 0.3, 0.4)])
    maps[3, 0, 0] = 4.0  # still 16 pixels of each of 4 levels: median 0.25
    cal = Calibration.from_holdout(scores, maps, target_fpr=0.0)
    assert cal.threshold == 4.0
    assert cal.map_vmin == pytest.approx(np.median(maps))
    assert cal.map_vmin == pytest.approx(0.25)
    assert cal.map_vmax == pytest.approx(2 * 4.0 - 0.25)
    # threshold mid-scale
    assert (cal.map_vmin + cal.map_vmax) / 2 == pytest.approx(cal.threshold)
    # maps of different sizes (a list) work too
    cal2 = Calibration.from_holdout(scores, [np.zeros((2, 3)), np.ones((5, 5))], target_fpr=0.0)
    assert cal2.map_vmin == 1.0 and cal2.map_vmax == pytest.approx(7.0)
    # without maps there is no map scale
    cal3 = Calibration.from_holdout(scores)
    assert cal3.map_vmin is None and cal3.map_vmax is None


def test_map_scale_when_maps_exceed_threshold() -> None:
    # map pixels above the image threshold everywhere: vmax falls back to the largest pixel
    cal = Calibration.from_holdout(np.array([0.1, 0.2]), [np.full((2, 2), 5.0), np.full((2, 2), 7.0)],
                                   target_fpr=0.0)
    assert cal.map_vmin == 6.0 and cal.map_vmax == 7.0 and cal.map_vmax > cal.map_vmin


def test_round_trip_to_dict_from_dict() -> None:
    rng = np.random.default_rng(0)
    cal = Calibration.from_holdout(rng.random(20), rng.random((20, 3, 3)), target_fpr=0.1)
    d = json.loads(json.dumps(cal.to_dict()))  # JSON-able
    assert set(d) == {"threshold", "median", "target_fpr", "n_holdout", "map_vmin", "map_vmax",
                      "holdout_fpr", "strategy", "f1"}
    back = Calibration.from_dict(d)
    assert back == cal
    x = rng.random(50) * 2
    np.testing.assert_array_equal(back.normalize(x), cal.normalize(x))
    np.testing.assert_array_equal(back.predict(x), cal.predict(x))


@pytest.mark.parametrize("value", [0.0, 2.0, -3.0, 1e6])
def test_degenerate_constant_scores(value: float) -> None:
    s = np.full(9, value)
    cal = Calibration.from_holdout(s, np.full((9, 2, 2), value), target_fpr=0.01)
    assert cal.threshold > cal.median == value
    assert cal.threshold - value <= max(abs(value) * 1e-3, 1e-6) * (1 + 1e-9)
    n = cal.normalize(np.array([value, cal.threshold, value + 10 * (cal.threshold - value)]))
    assert np.isfinite(n).all()
    np.testing.assert_allclose(n, [0.0, 0.5, 1.0])
    assert cal.predict(s).sum() == 0 and cal.holdout_fpr == 0.0
    assert cal.predict([value + 2 * (cal.threshold - value)])[0] == 1
    assert np.isfinite([cal.map_vmin, cal.map_vmax]).all() and cal.map_vmax > cal.map_vmin


def test_majority_ties_at_median() -> None:
    # more than half the scores equal: threshold (the max) is above the median, no one above it
    s = np.array([1.0, 1.0, 1.0, 1.0, 2.0])
    cal = Calibration.from_holdout(s, target_fpr=0.01)
    assert cal.median == 1.0 and cal.threshold == 2.0 and cal.predict(s).sum() == 0


def test_bad_input() -> None:
    with pytest.raises(DistiladError):
        Calibration.from_holdout(np.array([]))
    with pytest.raises(DistiladError):
        Calibration.from_holdout(np.ones(3), target_fpr=1.0)
    with pytest.raises(DistiladError):
        Calibration.from_holdout(np.ones(3), target_fpr=-0.1)


@pytest.mark.filterwarnings("error::distilad.errors.CalibrationWarning")
def test_warns_when_holdout_cannot_back_target() -> None:
    s = np.arange(8.0)
    with pytest.warns(CalibrationWarning) as rec:
        cal = Calibration.from_holdout(s, target_fpr=0.01)
    text = str(rec[0].message)
    assert "8 held-out" in text and "target_fpr=0.01" in text and "1/8 = 0.125" in text
    assert "at least 100" in text
    assert cal.threshold == 7.0  # what is done then: the highest held-out score
    # enough images (k >= 1), or target 0 (asking for the maximum): no warning
    Calibration.from_holdout(np.arange(100.0), target_fpr=0.01)
    Calibration.from_holdout(s, target_fpr=0.0)
    Calibration.from_holdout(s, target_fpr=0.125)


def test_f1_max_threshold_between_classes() -> None:
    normal = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    anomal = np.array([0.45, 0.9, 1.0])
    scores = np.concatenate([normal, anomal])
    labels = np.array([0] * 5 + [1] * 3)
    maps = [np.full((2, 2), v) for v in scores]
    cal = Calibration.from_labelled(scores, labels, maps)
    # flagging >= 0.9 gives F1 = 2*2/(2*2+0+1) = 0.8; >= 0.45 gives 2*3/(6+1+0) = 0.857 (best)
    assert cal.strategy == "f1_max" and cal.f1 == pytest.approx(6 / 7)
    assert cal.threshold == pytest.approx((0.45 + 0.4) / 2)  # mid-way to the next lower score
    np.testing.assert_array_equal(cal.predict(scores), [0, 0, 0, 0, 1, 1, 1, 1])
    assert cal.median == pytest.approx(0.3) and cal.n_holdout == 5
    assert cal.holdout_fpr == pytest.approx(0.2)
    assert cal.map_vmin == pytest.approx(0.3)  # from the normal maps only
    assert cal.normalize(np.array([cal.threshold]))[0] == pytest.approx(0.5)
    with pytest.raises(DistiladError, match="normal"):
        Calibration.from_labelled(scores, np.ones(8))
    with pytest.raises(DistiladError, match="labels"):
        Calibration.from_labelled(scores, np.full(8, 2))


def test_manual_threshold_keeps_scale_consistent() -> None:
    rng = np.random.default_rng(1)
    cal = Calibration.from_holdout(rng.random(50), rng.random((50, 3, 3)), target_fpr=0.1)
    new = cal.with_threshold(cal.threshold + 0.25)
    assert new.threshold == pytest.approx(cal.threshold + 0.25) and new.strategy == "manual"
    assert new.median == cal.median and new.holdout_fpr is None
    assert new.normalize(np.array([new.threshold]))[0] == pytest.approx(0.5)
    assert (new.map_vmin + new.map_vmax) / 2 == pytest.approx(new.threshold)
    assert Calibration.from_dict(json.loads(json.dumps(new.to_dict()))) == new
    for bad in (cal.median, cal.median - 1, float("nan"), "x"):
        with pytest.raises(DistiladError):
            cal.with_threshold(bad)
