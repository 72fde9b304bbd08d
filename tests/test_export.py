"""ONNX export: the exported graph gives PyTorch's results on the embedded bottle test images,
`distilad predict` runs .onnx files with the same outputs, and bad files are one-line errors.

Tiny models (RD with the Lite0 teacher at 64 px and a one-block student, 1 epoch; EDE-GAN at 16
px): the point is the computation's equality, not detection quality. The bottle test images are
256 px, so the resize inside the graph (to 64 / 16 px, with antialiasing) and the map's resize
back to 256 px are both compared.
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
from distilad.cli import EXIT_USER_ERROR, main  # noqa: E402
from distilad.data import image_files, image_folder  # noqa: E402
from distilad.errors import ExportError  # noqa: E402
from distilad.export import MAP_ATOL, SCORE_RTOL  # noqa: E402
from distilad.onnx_model import OnnxModel  # noqa: E402

RD_TINY = dict(backbone="efficientnet_lite0", image_size=64, epochs=1, batch_size=4,
               ocbe_blocks=1, decoder_blocks=[1, 1, 1], progress=False, device="cpu", seed=0)
GAN_TINY = dict(image_size=16, width=4, nz=8, epochs=1, batch_size=16, progress=False,
                device="cpu", seed=0)


def _recalibrate(det: distilad.Detector, bottle_dir: Path) -> None:
    """Threshold from 30 bottle training images the tiny fit did not see, at target_fpr 0.3,
    so that both labels occur among the test images and many scores lie near the threshold."""
    others = image_files(sorted((bottle_dir / "train" / "good").glob("*.jpg"))[100:130])
    det.calibrate(others, target_fpr=0.3)


@pytest.fixture(scope="module")
def rd_export(tmp_path_factory: pytest.TempPathFactory, _tiny_mvtec_master: Path,
              bottle_dir: Path) -> tuple[distilad.Detector, Path, Path, str]:
    """(fitted tiny RD, its .distilad file, its .onnx file written by `distilad export`, what
    that command printed). One export for all RD tests: it takes most of this file's time."""
    folder = tmp_path_factory.mktemp("rd-export")
    det = distilad.create_detector("rd", **RD_TINY).fit(_tiny_mvtec_master, validation=None)
    _recalibrate(det, bottle_dir)
    model = det.save(folder / "rd.distilad")
    onnx_file = folder / "rd.onnx"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(model), "-o", str(onnx_file)]) == 0
    return det, model, onnx_file, printed.getvalue()


def _assert_same(torch_result: distilad.ScoreResult, onnx_result: distilad.ScoreResult) -> None:
    a, b = torch_result, onnx_result
    rel = np.abs(b.image_scores - a.image_scores) / np.abs(a.image_scores)
    assert rel.max() < SCORE_RTOL, rel.max()
    np.testing.assert_array_equal(b.labels, a.labels)
    assert 0 < a.labels.sum() < len(a.labels)  # both labels occur: the comparison means something
    np.testing.assert_allclose(b.normalized_scores, a.normalized_scores, rtol=0, atol=1e-4)
    assert b.names == a.names


def test_rd_onnx_matches_pytorch_on_bottle(rd_export, bottle_dir: Path) -> None:
    det, _, onnx_file, _ = rd_export
    test = image_folder(bottle_dir / "test")
    want = det.score(test)
    model = OnnxModel(onnx_file, threads=1)
    got = model.score(test)
    _assert_same(want, got)
    # RD's score_batch_size "auto": onnxruntime's batch size was measured too
    assert model.batch_measurement["batch_size"] in model.batch_measurement["ms_per_image"]
    assert got.anomaly_maps.shape == want.anomaly_maps.shape == (len(test), 256, 256)
    assert np.abs(got.anomaly_maps - want.anomaly_maps).max() < MAP_ATOL


def test_rd_onnx_batch_size_and_image_size_are_free(rd_export, bottle_dir: Path) -> None:
    """One image per call or 16, 256 px or another size: the same results as PyTorch's."""
    det, _, onnx_file, _ = rd_export
    model = OnnxModel(onnx_file, threads=1)
    test = image_folder(bottle_dir / "test" / "broken_small")
    one, many = model.score(test, batch_size=1), model.score(test, batch_size=16)
    np.testing.assert_allclose(one.image_scores, many.image_scores, rtol=1e-5)
    odd = (np.random.default_rng(0).random((3, 90, 70, 3)) * 255).astype(np.uint8)
    want, got = det.score(odd), model.score(odd)
    assert got.anomaly_maps.shape == (3, 90, 70)
    np.testing.assert_allclose(got.image_scores, want.image_scores, rtol=SCORE_RTOL)
    assert np.abs(got.anomaly_maps - want.anomaly_maps).max() < MAP_ATOL


def test_onnx_metadata_describes_the_model(rd_export) -> None:
    import onnx

    det, _, onnx_file, _ = rd_export
    proto = onnx.load(str(onnx_file), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    info = json.loads(meta["distilad"])
    assert info["model"]["method"] == meta["method"] == "rd"
    assert info["image_size"] == 64 and meta["image_size"] == "64"
    assert info["model"]["calibration"]["threshold"] == det.calibration.threshold
    assert float(meta["threshold"]) == det.calibration.threshold
    assert meta["library_version"] == distilad.__version__
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[:3] == ["batch", "height", "width"]
    assert [o.name for o in proto.graph.output] == ["image_scores", "anomaly_maps",
                                                    "normalized_scores", "labels", "threshold"]


def test_edegan_onnx_matches_pytorch_on_bottle(tmp_path: Path, _tiny_mvtec_master: Path,
                                               bottle_dir: Path) -> None:
    """A one-channel EDE-GAN: the graph averages the RGB input as the Python path does."""
    det = distilad.create_detector("edegan", channels=1, **GAN_TINY)
    det.fit(_tiny_mvtec_master, validation=None)
    _recalibrate(det, bottle_dir)
    model = OnnxModel(det.export_onnx(tmp_path / "edegan.onnx"), threads=1)
    assert model.info["outputs"] == ["image_scores", "normalized_scores", "labels", "threshold"]
    test = image_folder(bottle_dir / "test")
    got, want = model.score(test), det.score(test)
    assert got.anomaly_maps is None and want.anomaly_maps is None
    _assert_same(want, got)
    # the export's own check ran (onnxruntime against PyTorch) and went into the metadata
    check = det.last_export["export_check"]
    assert check == model.info["export_check"] and check["labels_equal"]
    assert check["max_score_rel_diff"] < SCORE_RTOL


def test_pkdgan_graph_scores_its_student(_tiny_mvtec_master: Path, bottle_dir: Path) -> None:
    """P-KDGAN's exported path (its student, reconstruction score here) gives ``score``'s
    results, in PyTorch: the exporter itself is covered by the EDE-GAN test (the same
    GeneratorScoringNet)."""
    import torch
    from PIL import Image

    from distilad.export import DeployedGraph

    params = {k: v for k, v in GAN_TINY.items() if k != "epochs"}
    det = distilad.create_detector("pkdgan", teacher_epochs=1, step1_epochs=1, step2_epochs=0,
                                   student_width=2, student_nz=4, score="reconstruction", **params)
    det.fit(_tiny_mvtec_master, validation=None)
    _recalibrate(det, bottle_dir)
    files = sorted((bottle_dir / "test" / "broken_large").glob("*.jpg"))[:6]
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    graph = DeployedGraph(det._scoring_net(), det.calibration).eval()
    with torch.no_grad():
        scores, normalized, labels, threshold = graph(torch.from_numpy(images))
    want = det.score(images)
    np.testing.assert_allclose(scores.numpy(), want.image_scores, rtol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), want.labels)
    assert float(threshold) == det.calibration.threshold


def test_cli_export_then_predict_gives_the_same_predictions(rd_export, tmp_path: Path,
                                                            bottle_dir: Path) -> None:
    _, model, onnx_file, printed = rd_export
    assert "outputs image_scores, anomaly_maps, normalized_scores, labels, threshold" in printed
    assert "checked with onnxruntime" in printed and "labels identical" in printed
    inputs = [str(p) for p in sorted((bottle_dir / "test" / "contamination").glob("*.jpg"))[:4]]
    inputs.append(str(bottle_dir / "test" / "good"))
    for name, m in (("torch", model), ("onnx", onnx_file)):
        assert main(["predict", str(m), *inputs, "-o", str(tmp_path / name), "-q"]) == 0
    rows = {}
    for name in ("torch", "onnx"):
        with open(tmp_path / name / "predictions.csv", newline="", encoding="utf-8") as f:
            rows[name] = list(csv.DictReader(f))
    assert len(rows["onnx"]) == len(rows["torch"]) == 4 + 20
    for a, b in zip(rows["torch"], rows["onnx"], strict=True):
        assert (a["file"], a["label"], a["overlay"]) == (b["file"], b["label"], b["overlay"])
        assert float(b["score"]) == pytest.approx(float(a["score"]), rel=1e-4)
    assert (tmp_path / "onnx" / rows["onnx"][0]["overlay"]).is_file()
    doc = json.loads((tmp_path / "onnx" / "predictions.json").read_text())
    assert doc["threshold"] == json.loads((tmp_path / "torch" / "predictions.json")
                                          .read_text())["threshold"]


def _edited_copy(src: Path, dst: Path, **meta: str) -> Path:
    import onnx

    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(meta)
    del proto.metadata_props[:]
    for k, v in props.items():
        if v:
            proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(dst))
    return dst


def test_predict_refuses_bad_onnx_files_in_one_line(rd_export, tmp_path: Path, bottle_dir: Path,
                                                    capsys) -> None:
    import onnx

    _, _, onnx_file, _ = rd_export
    info = json.loads({p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
                      ["distilad"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    foreign = _edited_copy(onnx_file, tmp_path / "foreign.onnx", distilad="")
    mismatched = _edited_copy(onnx_file, tmp_path / "mismatched.onnx",
                              distilad=json.dumps({**info, "has_maps": False}))
    newer = _edited_copy(onnx_file, tmp_path / "newer.onnx",
                         distilad=json.dumps({**info, "format_version": 99}))
    cases = [(garbage, "is not a readable ONNX model"),
             (foreign, "not one exported by distilad"),
             (mismatched, "does not match its distilad description"),
             (newer, "exported by a newer distilad"),
             (tmp_path / "missing.onnx", "model file not found")]
    image = str(bottle_dir / "test" / "good" / "000.jpg")
    for i, (path, fragment) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main(["predict", str(path), image, "-o", str(out), "-q"]) == EXIT_USER_ERROR
        err = capsys.readouterr().err.strip()
        assert err.startswith("distilad: error:") and fragment in err and "\n" not in err, err
        assert not out.exists()


def test_export_refusals(rd_export, tmp_path: Path, capsys) -> None:
    det, model, onnx_file, _ = rd_export
    assert main(["export", str(model), "-o", str(onnx_file)]) == EXIT_USER_ERROR
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(model), "-o", str(tmp_path / "m.bin")]) == EXIT_USER_ERROR
    assert "must end in .onnx" in capsys.readouterr().err
    with pytest.raises(ExportError, match="cannot be exported to ONNX yet"):
        distilad.Detector._scoring_net(det)  # the base class: methods without an export path
