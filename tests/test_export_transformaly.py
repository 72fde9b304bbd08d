"""ONNX export of Transformaly: the whole path (uint8 images -> resize -> teacher blocks -> clones
-> per-block MSE -> its Gaussian; pooled feature -> PCA whitening -> its Gaussian; score = minus
their sum; calibration) in one graph gives PyTorch's results on the embedded bottle test images.

A tiny model (Lite0 teacher at 64 px, stages 2-6 cloned, 1 epoch on 12 bottle images at 64 px):
the point is the computation's equality, not detection quality. The bottle test images are
256 px, so the antialiased resize inside the graph is compared too.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install -e '.[export]')")
pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install -e '.[export]')")

import distilad  # noqa: E402
from distilad.cli import main  # noqa: E402
from distilad.data import image_files, image_folder  # noqa: E402
from distilad.export import SCORE_RTOL  # noqa: E402
from distilad.onnx_model import OnnxModel  # noqa: E402

TF_TINY = dict(image_size=64, epochs=1, batch_size=4, progress=False, device="cpu", seed=0)


@pytest.fixture(scope="module")
def tf_export(tmp_path_factory: pytest.TempPathFactory, _tiny_mvtec_master: Path,
              bottle_dir: Path) -> tuple[distilad.Detector, Path, Path, str]:
    """(fitted tiny Transformaly, its .distilad file, its .onnx file written by
    `distilad export`, what that command printed)."""
    folder = tmp_path_factory.mktemp("tf-export")
    det = distilad.create_detector("transformaly", **TF_TINY)
    det.fit(_tiny_mvtec_master, validation=None)
    # threshold from 30 training images the fit did not see, at target_fpr 0.3: both labels
    # occur among the test images and several scores lie near the threshold
    others = image_files(sorted((bottle_dir / "train" / "good").glob("*.jpg"))[100:130])
    det.calibrate(others, target_fpr=0.3)
    model = det.save(folder / "tf.distilad")
    onnx_file = folder / "tf.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(model), "-o", str(onnx_file)]) == 0
    return det, model, onnx_file, printed.getvalue()


def test_transformaly_onnx_matches_pytorch_on_bottle(tf_export, bottle_dir: Path) -> None:
    det, _, onnx_file, printed = tf_export
    assert "checked with onnxruntime" in printed and "labels identical" in printed
    model = OnnxModel(onnx_file, threads=1)
    assert model.info["outputs"] == ["image_scores", "normalized_scores", "labels", "threshold"]
    test = image_folder(bottle_dir / "test")
    want, got = det.score(test), model.score(test)
    assert got.anomaly_maps is None and want.anomaly_maps is None
    rel = np.abs(got.image_scores - want.image_scores) / np.abs(want.image_scores)
    assert rel.max() < SCORE_RTOL, rel.max()
    np.testing.assert_array_equal(got.labels, want.labels)
    assert 0 < want.labels.sum() < len(want.labels)  # both labels occur
    np.testing.assert_allclose(got.normalized_scores, want.normalized_scores, rtol=0, atol=1e-4)
    # the graph holds both densities: its scores are not those of either part alone
    alt = det.alternative_scores
    for part in ("pretrained", "teacher_student"):
        assert np.abs(got.image_scores - alt[part]).max() > 1e-2 * np.abs(alt[part]).max()
    # one image per call and another input size: the same as PyTorch
    odd = (np.random.default_rng(0).random((3, 90, 70, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(model.score(odd, batch_size=1).image_scores,
                               det.score(odd).image_scores, rtol=SCORE_RTOL)


def test_transformaly_onnx_metadata(tf_export) -> None:
    import onnx

    det, _, onnx_file, _ = tf_export
    proto = onnx.load(str(onnx_file), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    info = json.loads(meta["distilad"])
    assert info["model"]["method"] == meta["method"] == "transformaly"
    assert info["image_size"] == 64 and info["has_maps"] is False
    assert info["model"]["state"]["blocks"] == [2, 3, 4, 5, 6]
    assert float(meta["threshold"]) == det.calibration.threshold
    assert info["export_check"]["max_score_rel_diff"] < SCORE_RTOL
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[:3] == ["batch", "height", "width"]


def test_transformaly_cli_predict_onnx(tf_export, tmp_path: Path, bottle_dir: Path) -> None:
    _, model, onnx_file, _ = tf_export
    inputs = [str(p) for p in sorted((bottle_dir / "test" / "broken_large").glob("*.jpg"))[:3]]
    inputs.append(str(bottle_dir / "test" / "good"))
    for name, m in (("torch", model), ("onnx", onnx_file)):
        assert main(["predict", str(m), *inputs, "-o", str(tmp_path / name), "-q"]) == 0
    rows = {}
    for name in ("torch", "onnx"):
        with open(tmp_path / name / "predictions.csv", newline="", encoding="utf-8") as f:
            rows[name] = list(csv.DictReader(f))
    assert len(rows["onnx"]) == len(rows["torch"]) == 3 + 20
    for a, b in zip(rows["torch"], rows["onnx"], strict=True):
        assert (a["file"], a["label"]) == (b["file"], b["label"])
        assert float(b["score"]) == pytest.approx(float(a["score"]), rel=SCORE_RTOL)
