"""score_batch_size="auto": the batch size is measured, the fastest per image wins, the search
stops early when larger batches only get slower, and the scores do not depend on it."""

from __future__ import annotations

import numpy as np
import pytest

import distilad
from distilad.autobatch import batch_size_for, choose_batch_size
from distilad.errors import DistiladError


def _fake(call_ms):
    """(run, clock): ``run(b)`` advances a fake clock by ``call_ms(b)`` milliseconds."""
    now = [0.0]
    calls: list[int] = []

    def run(b: int) -> None:
        calls.append(b)
        now[0] += call_ms(b) / 1000.0

    return run, (lambda: now[0]), calls


@pytest.mark.parametrize("call_ms, want", [
    (lambda b: 10 + 2 * b, 32),           # a fixed overhead per call: batching pays all the way
    (lambda b: 40 * b ** 1.3, 1),          # each image slower in a batch (RD on a 2-core CPU)
    (lambda b: 30 * b + 5 * b * b + 60, 4),  # best per image at 4 (per image: 30 + 5b + 60/b)
])
def test_fastest_per_image_wins(call_ms, want: int) -> None:
    run, clock, _ = _fake(call_ms)
    result = choose_batch_size(run, (1, 2, 4, 8, 16, 32), clock=clock)
    assert result["batch_size"] == want
    per_image = result["ms_per_image"]
    assert per_image[want] == pytest.approx(call_ms(want) / want, rel=1e-3)  # rounded to 0.001


def test_within_five_percent_the_smaller_batch_is_kept() -> None:
    run, clock, _ = _fake(lambda b: {1: 100, 2: 199, 4: 390}[b])  # 100, 99.5, 97.5 ms per image
    assert choose_batch_size(run, (1, 2, 4), clock=clock)["batch_size"] == 1


def test_search_stops_when_batches_only_get_slower_or_the_job_is_small() -> None:
    run, clock, calls = _fake(lambda b: 40 * b ** 1.3)
    result = choose_batch_size(run, (1, 2, 4, 8, 16, 32), clock=clock)
    assert sorted(result["ms_per_image"]) == [1, 2, 4]  # two slower sizes in a row: stop
    assert max(calls) == 4
    # 20 images at ~40 ms: the search may take 0.5 s at most, a tenth of the job (0.08 s) is less
    run, clock, calls = _fake(lambda b: 40 * b)
    result = choose_batch_size(run, (1, 2, 4, 8, 16, 32), n_images=20, clock=clock)
    assert max(result["ms_per_image"]) <= 4 and max(calls) <= 4
    # never larger than the number of images
    run, clock, _ = _fake(lambda b: 10 + b)
    assert max(choose_batch_size(run, (1, 2, 4, 8), n_images=3, clock=clock)["ms_per_image"]) == 2


def test_fewer_images_than_the_choice_use_the_best_measured_size_below() -> None:
    measurement = {"batch_size": 16, "ms_per_image": {1: 50.0, 2: 30.0, 4: 29.5, 8: 20.0, 16: 10.0}}
    assert batch_size_for(measurement, None) == 16 and batch_size_for(measurement, 40) == 16
    assert batch_size_for(measurement, 5) == 2  # 4 is within 5 % of 2: the smaller one


def test_rd_auto_batch_scores_as_batch_one(_tiny_mvtec_master) -> None:
    det = distilad.create_detector("rd", backbone="efficientnet_lite0", image_size=32, epochs=1,
                                   batch_size=4, ocbe_blocks=1, decoder_blocks=[1, 1, 1],
                                   progress=False, device="cpu")
    assert det.params["score_batch_size"] == "auto"  # RD's default
    det.fit(_tiny_mvtec_master, validation=None)
    images = _tiny_mvtec_master / "test"
    auto = det.score(images)
    m = det.batch_measurement
    assert m["device"] == "cpu" and m["batch_size"] in m["ms_per_image"]
    assert all(ms > 0 for ms in m["ms_per_image"].values())
    one = det.set_params(score_batch_size=1).score(images)
    np.testing.assert_allclose(auto.image_scores, one.image_scores, rtol=1e-5)
    np.testing.assert_allclose(auto.anomaly_maps, one.anomaly_maps, atol=1e-5)
    with pytest.raises(DistiladError, match="score_batch_size must be 'auto' or an integer >= 1"):
        det.set_params(score_batch_size="fast")


def test_a_measurement_for_more_images_serves_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    """`distilad predict` scores in chunks of 16: the last, shorter chunk reuses the measurement
    instead of measuring again (the cache is per process, per configuration)."""
    import distilad.autobatch as ab

    monkeypatch.setattr(ab, "_CACHE", {})
    measured: list[int | None] = []

    def fake_choose(run, candidates, n_images=None, **kw):
        measured.append(n_images)
        return {"batch_size": 4, "ms_per_image": {1: 9.0, 2: 6.0, 4: 5.0}}

    monkeypatch.setattr(ab, "choose_batch_size", fake_choose)
    det = distilad.create_detector("rd", backbone="efficientnet_lite0", image_size=32,
                                   ocbe_blocks=1, decoder_blocks=[1, 1, 1], device="cpu")
    det._build()
    assert ab.measured_batch_size(det, 16) == 4
    assert ab.measured_batch_size(det, 3) == 2 and ab.measured_batch_size(det, 9) == 4
    assert measured == [16]
    assert ab.measured_batch_size(det, 100) == 4 and measured == [16, 128]
    assert ab.measured_batch_size(det, 1) == 1 and len(measured) == 2
