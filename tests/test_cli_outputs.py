"""Outputs a user can rely on: folders that appear complete or not at all, CSV / JSON that any
reader parses, a report that stands alone, and help that shows every default."""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import distilad.report as report_pkg
from distilad.cli import build_parser, main
from distilad.report.overlay import LUT


def _strict_json(path: Path) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{path.name} holds {name}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _leftovers(parent: Path) -> list[str]:
    """Hidden temporary folders a command may have left beside its output."""
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, _tiny_mvtec_master: Path) -> Path:
    out = tmp_path_factory.mktemp("outputs-model") / "tiny.distilad"
    assert main(["fit", "rd", str(_tiny_mvtec_master), "-o", str(out), "--epochs", "1",
                 "--image-size", "64", "--device", "cpu", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def model_with_validation(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a known validation record (as ``Detector.fit`` stores it)."""
    import distilad

    det = distilad.load_detector(model_file, device="cpu")
    det.fit_info["validation"] = {"kind": "synthetic-defects", "n_normal": 3, "n_anomalous": 3,
                                  "metrics": {"n_images": 6.0, "n_anomalous": 3.0,
                                              "image_auroc": 0.8765, "pixel_auroc": 0.6543}}
    return det.save(tmp_path_factory.mktemp("outputs-val") / "val.distilad")


def test_test_outputs_strict_json_integer_counts_and_standalone_report(
        model_with_validation: Path, tiny_mvtec: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # only good test images: the image metrics are undefined and must say why
    for sub in (tiny_mvtec / "test").iterdir():
        if sub.name != "good":
            shutil.rmtree(sub)
    shutil.rmtree(tiny_mvtec / "ground_truth")
    out = tmp_path / "rep"
    assert main(["test", str(model_with_validation), str(tiny_mvtec), "-o", str(out),
                 "--device", "cpu", "-q"]) == 0
    doc = _strict_json(out / "metrics.json")
    m = doc["metrics"]
    assert m["n_images"] == 3 and isinstance(m["n_images"], int)
    assert m["n_anomalous"] == 0 and isinstance(m["n_anomalous"], int)
    assert m["image_auroc"] is None and m["tpr_at_threshold"] is None
    assert m["pixel_auroc"] is None
    assert any(n.startswith("image_auroc") and "no anomalous images" in n for n in doc["notes"])
    assert any("pixel_auroc" in n and "no ground-truth masks" in n for n in doc["notes"])
    assert 0.0 <= m["fpr_at_threshold"] <= 1.0
    assert doc["validation"]["metrics"]["image_auroc"] == 0.8765
    printed = capsys.readouterr().out
    assert "(3 images, 0 anomalous)" in printed and "3.0" not in printed
    assert "note: image_auroc" in printed
    assert "validation on held-out normal training images vs synthetic defects" in printed
    assert "0.8765" in printed

    html = (out / "report.html").read_text(encoding="utf-8")
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", html)
    assert len(srcs) == 3 and all(s.startswith("data:image/") for s in srcs)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html)  # nothing outside the page
    assert '<td>n_images</td><td class="num">3</td>' in html
    assert "no anomalous images" in html
    # validation metrics in their own section, after the test metrics
    test_pos, val_pos = html.index("<h2>Test metrics"), html.index("<h2>Validation metrics")
    assert test_pos < val_pos and html.index("0.8765") > val_pos
    assert "synthetic defects" in html[val_pos:]
    assert _leftovers(tmp_path) == []


def test_error_mid_write_leaves_no_partial_folder_and_keeps_old_results(
        model_file: Path, tiny_mvtec: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = report_pkg.write_html_report

    def fail_after_writing(out_dir: Path, **kw: Any) -> Path:
        real(out_dir, **kw)  # the report is written, then something breaks
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(report_pkg, "write_html_report", fail_after_writing)
    out = tmp_path / "new" / "deeper" / "rep"
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["test", str(model_file), str(tiny_mvtec), "-o", str(out), "-q"])
    assert not out.exists() and not (tmp_path / "new").exists()  # created parents removed too
    # --overwrite replaces earlier results only when the new ones are complete
    old = tmp_path / "old"
    (old / "overlays").mkdir(parents=True)
    (old / "metrics.json").write_text("earlier results")
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["test", str(model_file), str(tiny_mvtec), "-o", str(old), "--overwrite", "-q"])
    assert (old / "metrics.json").read_text() == "earlier results"
    assert sorted(p.name for p in old.iterdir()) == ["metrics.json", "overlays"]
    assert _leftovers(tmp_path) == []


def test_ctrl_c_during_predict_leaves_nothing(model_file: Path, tiny_mvtec: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    real = report_pkg.save_png
    calls = []

    def interrupt_second(arr: np.ndarray, path: Path) -> Path:
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(arr, path)

    monkeypatch.setattr(report_pkg, "save_png", interrupt_second)
    out = tmp_path / "pred"
    assert main(["predict", str(model_file), str(tiny_mvtec / "test" / "good"), "-o", str(out),
                 "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert len(calls) == 2 and calls[0].is_relative_to(tmp_path)  # one overlay was written...
    assert not out.exists() and _leftovers(tmp_path) == []  # ...and removed with its folder


def test_predict_csv_json_overlays_overwrite_and_progress(
        model_file: Path, tiny_mvtec: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    odd = 'crack, "big".jpg'
    shutil.copy(tiny_mvtec / "test" / "broken_large" / "000.jpg", inputs / odd)
    shutil.copy(tiny_mvtec / "test" / "good" / "000.jpg", inputs / "plain.jpg")
    out = tmp_path / "pred"
    out.mkdir()
    (out / "overlays").mkdir()
    (out / "overlays" / "99999_stale.png").write_bytes(b"old")
    (out / "stale.txt").write_text("old")
    capsys.readouterr()
    argv = ["predict", str(model_file), str(inputs), "-o", str(out), "--device", "cpu"]
    assert main(argv) == 2  # not empty: refused before any work, untouched
    assert (out / "stale.txt").read_text() == "old"
    assert main([*argv, "--overwrite"]) == 0
    captured = capsys.readouterr()
    assert "predicting" in captured.err  # a progress bar on stderr (off with -q)
    assert not (out / "stale.txt").exists()
    assert not (out / "overlays" / "99999_stale.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["overlays", "predictions.csv",
                                                     "predictions.json"]

    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "score", "normalized_score", "label", "overlay"]
    by_file = {r[0]: r for r in rows[1:]}
    assert set(by_file) == {str(inputs / odd), str(inputs / "plain.jpg")}  # as given
    for r in rows[1:]:
        assert (out / r[4]).is_file() and not Path(r[4]).is_absolute()
        assert (float(r[2]) > 0.5) == (r[3] == "1")
    doc = _strict_json(out / "predictions.json")
    assert {p["overlay"] for p in doc["predictions"]} == {r[4] for r in rows[1:]}
    assert doc["predictions"][0]["file"] in by_file

    # each overlay: the image, the map over it, and a colour bar below both
    plain = next(r[4] for r in rows[1:] if r[0].endswith("plain.jpg"))
    panel = np.asarray(Image.open(out / plain).convert("RGB"))
    with Image.open(inputs / "plain.jpg") as im:
        img = np.asarray(im.convert("RGB"))
    k = 3  # 64 px images are enlarged x3 so that the colour bar's text fits
    h, w = 64 * k, 64 * k
    assert panel.shape == (h + 46, 2 * w + 4, 3)
    np.testing.assert_array_equal(panel[:h, :w], np.repeat(np.repeat(img, k, 0), k, 1))
    assert not np.array_equal(panel[:h, w + 4:], panel[:h, :w])  # the map is drawn over it
    bar_row = panel[h + 20]  # the gradient runs from x = 6 to x = width - 7
    np.testing.assert_array_equal(bar_row[6], LUT[0])
    np.testing.assert_array_equal(bar_row[-7], LUT[-1])

    out_q = tmp_path / "pred-q"
    assert main(["predict", str(model_file), str(inputs / "plain.jpg"), "-o", str(out_q),
                 "-q"]) == 0
    assert "predicting" not in capsys.readouterr().err


def test_predict_unreadable_files_stop_or_are_skipped(
        model_file: Path, tiny_mvtec: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A file that is no image (header) or whose pixels are cut short (decoding, found only while
    scoring) stops predict with one line and nothing written; with --skip-unreadable the others
    are scored exactly as alone, and the skipped files are listed."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = tiny_mvtec / "test" / "good" / "000.jpg"
    shutil.copy(good, inputs / "a.jpg")
    shutil.copy(tiny_mvtec / "test" / "broken_large" / "000.jpg", inputs / "c.jpg")
    (inputs / "b_not_an_image.png").write_text("not an image")
    data = good.read_bytes()
    (inputs / "d_truncated.jpg").write_bytes(data[: len(data) // 2])
    for bad in ("b_not_an_image.png", "d_truncated.jpg"):
        out = tmp_path / f"stop-{bad}"
        given = [str(inputs / "a.jpg"), str(inputs / bad), str(inputs / "c.jpg")]
        capsys.readouterr()
        assert main(["predict", str(model_file), *given, "-o", str(out), "-q"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and bad in err[0] and "--skip-unreadable" in err[0]
        assert not out.exists() and not _leftovers(tmp_path)

    out = tmp_path / "skip"
    assert main(["predict", str(model_file), str(inputs), "-o", str(out), "-q",
                 "--skip-unreadable"]) == 0
    captured = capsys.readouterr()
    assert "2 unreadable skipped" in captured.out
    assert sum("skipped" in line for line in captured.err.splitlines()) == 2
    doc = _strict_json(out / "predictions.json")
    assert [Path(s["file"]).name for s in doc["skipped"]] == ["b_not_an_image.png",
                                                             "d_truncated.jpg"]
    assert "truncated" in doc["skipped"][1]["reason"]
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert [Path(r[0]).name for r in rows] == ["a.jpg", "c.jpg"]
    assert all((out / r[4]).is_file() for r in rows)
    alone = tmp_path / "alone"
    assert main(["predict", str(model_file), str(inputs / "a.jpg"), str(inputs / "c.jpg"),
                 "-o", str(alone), "-q"]) == 0
    with open(alone / "predictions.csv", newline="", encoding="utf-8") as f:
        assert [r[1:4] for r in list(csv.reader(f))[1:]] == [r[1:4] for r in rows]

    (inputs / "a.jpg").write_text("gone bad")
    (inputs / "c.jpg").write_text("gone bad")
    assert main(["predict", str(model_file), str(inputs), "-o", str(tmp_path / "none"), "-q",
                 "--skip-unreadable"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "distilad: error: none of the 4 images can be read"
    assert not (tmp_path / "none").exists()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_shows_every_default_an_example_and_quiet() -> None:
    subs = _subparsers(build_parser())
    assert set(subs) == {"list", "fit", "test", "predict", "export", "serve", "demo", "bench"}
    for name, p in subs.items():
        fmt = p.formatter_class(prog=p.prog)
        text = p.format_help()
        assert "example" in (p.epilog or ""), name
        assert f"distilad {name} " in p.epilog or name == "list" and "distilad list" in p.epilog
        assert any("-q" in a.option_strings for a in p._actions), f"{name} has no -q"
        for a in p._actions if name != "bench" else []:  # bench's options: tests/test_bench.py
            if a.help == argparse.SUPPRESS or isinstance(a, argparse._HelpAction):
                continue
            if a.option_strings and a.nargs == 0:  # a flag: off unless given
                continue
            if a.required or (not a.option_strings and a.nargs is None):  # must be given
                continue
            assert "default" in fmt._get_help_string(a), f"{name} {a.dest}: no default shown"
        assert "(default: None)" not in text, name
    demo = subs["demo"].format_help()
    assert "(default: 12)" in re.sub(r"\s+", " ", demo)  # the demo's own epoch count


def test_overwrite_never_replaces_inputs_or_the_current_folder(
        model_file: Path, tiny_mvtec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    good = tiny_mvtec / "test" / "good"
    before = sorted(p.name for p in good.iterdir())
    for out, what in [(good, f"the input {good}"), (tiny_mvtec, f"the input {good}")]:
        assert main(["predict", str(model_file), str(good), "-o", str(out), "--overwrite"]) == 2
        assert what in capsys.readouterr().err
    assert main(["test", str(model_file), str(tiny_mvtec), "-o", str(tiny_mvtec.parent),
                 "--overwrite"]) == 2
    assert "the input" in capsys.readouterr().err
    monkeypatch.chdir(good)
    assert main(["predict", str(model_file), "000.jpg", "-o", str(tiny_mvtec),
                 "--overwrite"]) == 2
    assert "the current folder" in capsys.readouterr().err
    assert sorted(p.name for p in good.iterdir()) == before
