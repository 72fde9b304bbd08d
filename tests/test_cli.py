"""Tests of the command line, run in-process through ``distilad.cli.main``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilad.cli import EXIT_USER_ERROR, main


def _one_error_line(err: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("distilad: error:")
    return lines[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, _tiny_mvtec_master: Path) -> Path:
    out = tmp_path_factory.mktemp("cli-model") / "tiny.distilad"
    rc = main(["fit", "rd", str(_tiny_mvtec_master), "-o", str(out), "--epochs", "1",
               "--image-size", "64", "--device", "cpu", "-q"])
    assert rc == 0 and out.is_file()
    return out


def test_fit_pkdgan_prints_computation(tmp_path: Path, tiny_mvtec: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pk.distilad"
    rc = main(["fit", "pkdgan", str(tiny_mvtec), "-o", str(out), "--device", "cpu", "-q",
               "--set", "width=8", "--set", "nz=16", "--set", "student_width=2", "--set",
               "student_nz=4", "--set", "teacher_epochs=1", "--set", "step1_epochs=1", "--set",
               "step2_epochs=0", "--set", "batch_size=4", "--set", 'schedule="fixed"'])
    assert rc == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("generator FLOPs per image"))
    from distilad.detector import read_model_config
    from distilad.methods.edegan.model import Generator, count_flops

    # RGB 32 px: the inner convolutions scale with width^2 (16:1), the first and last with width
    # (4:1), so the whole generator lands between
    want = count_flops(Generator(32, 3, 16, 8), 32, 3) / count_flops(Generator(32, 3, 4, 2), 32, 3)
    assert f"({want:.1f}:1)" in line and 4 < want < 16, line
    assert read_model_config(out)["fit_info"]["flops_ratio"] == pytest.approx(want, abs=0.01)


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "methods:" in out
    assert any(line.split()[:1] == ["rd"] for line in out.splitlines())
    assert "efficientnet_lite0" in out and "resnet18" in out


def test_fit_writes_model(model_file: Path, tmp_path: Path, tiny_mvtec: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    from distilad.detector import read_model_config

    cfg = read_model_config(model_file)
    assert cfg["method"] == "rd" and cfg["params"]["epochs"] == 1
    assert cfg["params"]["image_size"] == 64 and cfg["params"]["progress"] is False
    assert cfg["fit_info"]["n_train"] == 11 and cfg["fit_info"]["n_holdout"] == 1
    # --set passes any argument; the summary line names counts and the output
    out = tmp_path / "sub" / "m.distilad"
    rc = main(["fit", "rd", str(tiny_mvtec), "-o", str(out), "--epochs", "1", "--image-size",
               "64", "--device", "cpu", "--set", "holdout_fraction=0.25", "--set",
               "decoder_blocks=[1,1,1]", "-q"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "on 9 images (3 held out" in text and str(out) in text
    cfg = read_model_config(out)
    # the validation on synthetic defects of the 3 held-out images is printed after training
    val = cfg["fit_info"]["validation"]
    assert val["kind"] == "synthetic-defects" and val["n_normal"] == 3 == val["n_anomalous"]
    auroc = f"{val['metrics']['image_auroc']:.4f}"
    assert any("image AUROC" in x and auroc in x for x in text.splitlines()), text
    assert cfg["params"]["holdout_fraction"] == 0.25 and cfg["params"]["decoder_blocks"] == [1, 1, 1]


def test_test_writes_metrics_and_report(model_file: Path, tiny_mvtec: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["test", str(model_file), str(tiny_mvtec), "-o", str(out), "--device", "cpu"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    m = doc["metrics"]
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert key in m and 0.0 <= m[key] <= 1.0
    assert m["n_images"] == 12 and m["n_anomalous"] == 9
    assert len(doc["images"]) == 12
    assert sum(i["label"] for i in doc["images"]) == 9
    assert all(i["predicted"] in (0, 1) and 0 <= i["normalized_score"] <= 1 for i in doc["images"])
    assert doc["model"]["method"] == "rd"
    html = (out / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "</html>" in html
    printed = capsys.readouterr().out
    assert "image AUROC" in printed and f"{m['image_auroc']:.4f}" in printed
    # a second run into the same folder needs --overwrite
    assert main(["test", str(model_file), str(tiny_mvtec), "-o", str(out), "--overwrite"]) == 0


def test_predict_folder(model_file: Path, tiny_mvtec: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "inputs"
    shutil.copytree(tiny_mvtec / "test" / "broken_large", inputs / "a")
    Image.fromarray(np.full((48, 80), 128, np.uint8), mode="L").save(inputs / "gray.png")
    out = tmp_path / "pred"
    assert main(["predict", str(model_file), str(inputs), "-o", str(out), "--device", "cpu"]) == 0
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert set(rows[0]) == {"file", "score", "normalized_score", "label", "overlay"}
    assert {Path(r["file"]).name for r in rows} == {"000.jpg", "001.jpg", "002.jpg", "gray.png"}
    for r in rows:
        assert r["label"] in ("0", "1") and 0.0 <= float(r["normalized_score"]) <= 1.0
        assert (float(r["normalized_score"]) > 0.5) == (r["label"] == "1")
    pngs = sorted((out / "overlays").glob("*.png"))
    assert len(pngs) == 4 and {r["overlay"] for r in rows} == {f"overlays/{p.name}" for p in pngs}
    # image | overlay side by side (4 px gap), a 46 px colour bar below; small images are
    # enlarged by an integer factor to at least 192 px (x3 for both)
    sizes = {p.name.split("_", 1)[1]: Image.open(p).size for p in pngs}
    assert sizes["gray.png"] == (2 * 240 + 4, 144 + 46)
    assert sizes["000.png"] == (2 * 192 + 4, 192 + 46)
    doc = json.loads((out / "predictions.json").read_text())
    assert len(doc["predictions"]) == 4 and isinstance(doc["threshold"], float)
    printed = capsys.readouterr().out
    assert "of 4 images anomalous" in printed
    # single files work too
    out2 = tmp_path / "pred2"
    assert main(["predict", str(model_file), str(inputs / "gray.png"), "-o", str(out2)]) == 0
    assert len((out2 / "predictions.csv").read_text().splitlines()) == 2


def test_user_errors_are_one_line_exit_2(model_file: Path, tiny_mvtec: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    def err(argv: list[str]) -> str:
        capsys.readouterr()
        assert main(argv) == EXIT_USER_ERROR
        return _one_error_line(capsys.readouterr().err)

    assert "no-such-method" in err(["fit", "no-such-method", str(tiny_mvtec), "-o",
                                    str(tmp_path / "a.distilad")])
    missing = tmp_path / "missing-folder"
    assert str(missing) in err(["fit", "rd", str(missing), "-o", str(tmp_path / "b.distilad")])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(empty) in err(["fit", "rd", str(empty), "-o", str(tmp_path / "c.distilad"), "-q"])
    assert not (tmp_path / "c.distilad").exists()
    assert "bogus" in err(["fit", "rd", str(tiny_mvtec), "-o", str(tmp_path / "d.distilad"),
                           "--set", "bogus=1"])
    assert "KEY=VALUE" in err(["fit", "rd", str(tiny_mvtec), "-o", str(tmp_path / "d.distilad"),
                               "--set", "novalue"])
    corrupt = tmp_path / "corrupt.distilad"
    corrupt.write_bytes(b"\x00garbage\xff" * 50)
    assert "corrupt.distilad" in err(["test", str(corrupt), str(tiny_mvtec), "-o",
                                      str(tmp_path / "r1")])
    assert "corrupt.distilad" in err(["predict", str(corrupt), str(tiny_mvtec), "-o",
                                      str(tmp_path / "r2")])
    assert "not found" in err(["test", str(tmp_path / "none.distilad"), str(tiny_mvtec), "-o",
                               str(tmp_path / "r3")])
    # a non-empty output folder is refused and left as it was
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert "--overwrite" in err(["test", str(model_file), str(tiny_mvtec), "-o", str(busy)])
    assert "--overwrite" in err(["predict", str(model_file), str(tiny_mvtec / "test"), "-o",
                                 str(busy)])
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
    assert (busy / "keep.txt").read_text() == "mine"
    # an existing model file is not overwritten by fit
    existing = tmp_path / "existing.distilad"
    existing.write_text("old model")
    assert "exists" in err(["fit", "rd", str(tiny_mvtec), "-o", str(existing), "--epochs", "1",
                            "--image-size", "64", "-q"])
    assert existing.read_text() == "old model"
    # test needs labelled data, predict needs images
    assert "labelled" in err(["test", str(model_file), str(tiny_mvtec / "test" / "good"), "-o",
                              str(tmp_path / "r5")])
    txt = tmp_path / "notes.txt"
    txt.write_text("x")
    assert "notes.txt" in err(["predict", str(model_file), str(txt), "-o", str(tmp_path / "r4")])


def test_model_with_wrong_tensors_is_one_line_error(model_file: Path, tiny_mvtec: Path,
                                                    tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(model_file), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(model_file))
    tensors.pop(sorted(k for k in tensors if k.startswith("student."))[0])
    bad = tmp_path / "bad.distilad"
    save_file(tensors, str(bad), metadata=meta)
    assert main(["predict", str(bad), str(tiny_mvtec / "test" / "good"), "-o",
                 str(tmp_path / "o")]) == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert "bad.distilad" in line and "student" in line


@pytest.mark.parametrize("sub", [None, "list", "fit", "test", "predict", "export", "demo", "bench"])
def test_help_exits_zero(sub: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--help"] if sub is None else [sub, "--help"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: distilad")
    if sub is not None:
        assert f"distilad {sub}" in out.splitlines()[0]


def test_version_and_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    import distilad

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and distilad.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["fit", "rd"])  # missing data and -o
    assert e.value.code == 2


@pytest.mark.parametrize("command", ["test", "predict", "bench", "serve", "export"])
def test_only_fit_runs_under_torchrun(command: str, model_file: Path, tiny_mvtec: Path,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Under torchrun every process would repeat test/predict/... and write the same outputs: one
    line, exit 2, nothing written."""
    out = tmp_path / "out"
    argv = {"test": ["test", str(model_file), str(tiny_mvtec), "-o", str(out / "o")],
            "predict": ["predict", str(model_file), str(tiny_mvtec), "-o", str(out / "o")],
            "bench": ["bench", "--dataset", "mnist", "--results", str(out / "o")],
            "serve": ["serve", str(model_file)],
            "export": ["export", str(model_file), "-o", str(out / "o.onnx")]}[command]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(argv) == EXIT_USER_ERROR
    line = _one_error_line(capsys.readouterr().err)
    assert f"{command}: only `fit` runs under torchrun" in line and "WORLD_SIZE=2" in line
    assert not out.exists()
