"""``test`` / ``predict`` score in chunks of the model's scoring batch size (measured for
``score_batch_size="auto"``), not a constant, with the maps of one chunk bounded in memory."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import distilad
from distilad import ScoreResult, autobatch
from distilad.cli import _merge_results, _score_in_chunks, main, scoring_chunk
from distilad.data import as_image_set
from distilad.detector import Detector


class _Model:
    """Stands in for a detector (``_score_batch_size``) or an OnnxModel (``_batch_size``)."""

    def __init__(self, batch_size: int, onnx: bool = False):
        self.params: dict = {}
        self.asked: list[int] = []
        self.calls: list[int] = []
        self._size = batch_size
        if onnx:
            self._batch_size = self._ask
        else:
            self._score_batch_size = self._ask

    def _ask(self, n: int) -> int:
        self.asked.append(n)
        return self._size

    def score(self, images) -> ScoreResult:
        self.calls.append(len(images))
        return ScoreResult(np.arange(len(images), dtype=float), None, names=list(images.names))


@pytest.mark.parametrize("onnx", [False, True])
def test_chunks_follow_the_models_batch_size_for_the_whole_job(onnx: bool) -> None:
    images = as_image_set(np.zeros((12, 64, 64), np.uint8))
    model = _Model(5, onnx=onnx)
    parts = list(_score_in_chunks(model, images, progress=False, desc="x"))
    assert model.asked == [12]  # measured (or read) once, for all the images
    assert model.calls == [5, 5, 2]
    assert [list(idx) for idx, _ in parts] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    assert _merge_results([r for _, r in parts]).image_scores.tolist() == [0, 1, 2, 3, 4] * 2 + [0, 1]
    assert model.params["progress"] is False


def test_the_largest_images_maps_bound_the_chunk() -> None:
    images = as_image_set([np.zeros((64, 64), np.uint8), np.zeros((128, 64), np.uint8)])
    model = _Model(256)
    assert scoring_chunk(model, images, max_map_bytes=3 * 4 * 128 * 64) == 3
    assert scoring_chunk(model, images, max_map_bytes=10) == 1  # one image at least
    assert scoring_chunk(model, images) == 256  # 256 maps of 32 kB: under the default bound


def test_predict_scores_in_batches_of_the_measured_size(_tiny_mvtec_master: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    det = distilad.create_detector("rd", backbone="efficientnet_lite0", image_size=64, epochs=1,
                                   batch_size=4, ocbe_blocks=1, decoder_blocks=[1, 1, 1],
                                   device="cpu", progress=False, score_batch_size="auto")
    det.fit(_tiny_mvtec_master, validation=None)
    model = det.save(tmp_path / "m.distilad")
    # the measurement, made up: batch 4 the fastest per image
    monkeypatch.setattr(autobatch, "_CACHE", {})
    measured: list = []

    def choose(run, candidates, n_images=None, **kw):
        measured.append(n_images)
        return {"batch_size": 4, "ms_per_image": {1: 9.0, 2: 8.0, 4: 5.0, 8: 6.0}}

    monkeypatch.setattr(autobatch, "choose_batch_size", choose)
    sizes: list[int] = []
    score = Detector.score

    def spy(self, data):
        result = score(self, data)
        sizes.append(len(result.image_scores))
        return result

    monkeypatch.setattr(Detector, "score", spy)
    test_dir = _tiny_mvtec_master / "test"
    assert main(["predict", str(model), str(test_dir), "-o", str(tmp_path / "p"), "-q"]) == 0
    assert measured == [16]  # once, for the 12 images (rounded up to a power of two)
    assert sizes == [4, 4, 4]
    with open(tmp_path / "p" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    want = distilad.load_detector(model, device="cpu").score(sorted(test_dir.rglob("*.jpg")))
    got = {Path(r["file"]).resolve(): float(r["score"]) for r in rows}
    np.testing.assert_allclose([got[p.resolve()] for p in sorted(test_dir.rglob("*.jpg"))],
                               want.image_scores, rtol=1e-5)
