"""The inspection server's HTTP API (`distilad serve`), in-process through FastAPI's TestClient:
a served score is `det.score`'s on the same file, every kind of bad upload gets a 4xx with a
one-line message and the next good request still works, requests from several threads are all
answered, and the `serve` command refuses bad arguments in one line before serving.

Tiny RD (Lite0 teacher, 64 px, one-block student, 1 epoch) on the tiny bottle category,
recalibrated on 30 other bottle *training* images so that the defective test image is flagged.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="fastapi not installed (pip install -e '.[serve]')")
pytest.importorskip("python_multipart", reason="python-multipart not installed "
                    "(pip install -e '.[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

import distilad  # noqa: E402
from distilad.cli import EXIT_USER_ERROR, main  # noqa: E402
from distilad.data import image_files  # noqa: E402
from distilad.serve import UploadLimits, create_app  # noqa: E402

RD_TINY = dict(backbone="efficientnet_lite0", image_size=64, epochs=1, batch_size=4,
               ocbe_blocks=1, decoder_blocks=[1, 1, 1], progress=False, device="cpu", seed=0)
DEFECT = Path("test") / "broken_large" / "000.jpg"
GOOD = Path("test") / "good" / "000.jpg"


@functools.cache
def fit_tiny_rd(train_category: Path, bottle_dir: Path) -> distilad.Detector:
    """The tiny RD of this file, recalibrated (target FPR 0.3) on bottle training images 100-129,
    which the tiny fit did not see; fitted once per process (tests/test_serve_browser.py uses it
    too). Callers must not change it."""
    det = distilad.create_detector("rd", **RD_TINY).fit(train_category, validation=None)
    others = image_files(sorted((bottle_dir / "train" / "good").glob("*.jpg"))[100:130])
    det.calibrate(others, target_fpr=0.3)
    return det


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, _tiny_mvtec_master: Path,
           bottle_dir: Path) -> tuple[distilad.Detector, Path]:
    """(fitted tiny RD, its saved .distilad file)."""
    det = fit_tiny_rd(_tiny_mvtec_master, bottle_dir)
    return det, det.save(tmp_path_factory.mktemp("serve") / "tiny.distilad")


@pytest.fixture(scope="module")
def client(served: tuple[distilad.Detector, Path]) -> TestClient:
    """The app loaded from the model file, with a 200 kB / 1 M-pixel upload limit."""
    _, model = served
    app = create_app(str(model), device="cpu",
                     limits=UploadLimits(max_bytes=200_000, max_pixels=1_000_000))
    return TestClient(app)


def _post(client: TestClient, path: Path | str, data: bytes | None = None,
          content_type: str = "image/jpeg", query: str = "") -> object:
    name = Path(path).name
    body = Path(path).read_bytes() if data is None else data
    return client.post(f"/predict{query}", files={"file": (name, body, content_type)})


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


def test_predict_gives_the_detectors_score_label_and_an_overlay(
        client: TestClient, served: tuple[distilad.Detector, Path], bottle_dir: Path) -> None:
    det, _ = served
    files = [bottle_dir / DEFECT, bottle_dir / GOOD]
    want = det.score(image_files(files))
    assert set(want.labels.tolist()) == {0, 1}, "the fixture should flag one of the two only"
    for i, f in enumerate(files):
        r = _post(client, f, query="?overlay=true")
        assert r.status_code == 200, r.text
        got = r.json()
        assert abs(got["score"] - want.image_scores[i]) <= 1e-6
        assert abs(got["normalized_score"] - want.normalized_scores[i]) <= 1e-6
        assert got["label"] == ("anomalous" if want.labels[i] == 1 else "normal")
        assert got["threshold"] == pytest.approx(det.threshold, abs=0)
        assert got["image_size"] == [256, 256] and got["file"] == f.name
        t = got["timing_ms"]
        assert 0 < t["score"] <= t["total"] and t["overlay"] > 0
        panel = Image.open(io.BytesIO(base64.b64decode(got["overlay_png"])))
        assert panel.format == "PNG" and panel.width == 2 * 256 + 4 and panel.height > 256
    plain = _post(client, files[0]).json()
    assert "overlay_png" not in plain and plain["timing_ms"]["overlay"] == 0
    assert plain["score"] == pytest.approx(want.image_scores[0], abs=1e-6)


BAD_UPLOADS = [
    # (id, multipart file part or raw request, expected status, fragment of the message)
    ("not-an-image", ("notes.png", b"just some text, not pixels", "image/png"), 400,
     "notes.png: not an image"),
    ("empty", ("empty.png", b"", "image/png"), 400, "empty.png: the file is empty"),
    ("text-type", ("notes.txt", b"hello", "text/plain"), 415,
     "content type 'text/plain' is not an image"),
    ("too-many-bytes", ("big.png", b"\x89PNG" + bytes(300_000), "image/png"), 413,
     "over the server's limit of 200,000 bytes"),
    ("too-many-pixels", ("wide.png", _png(2000, 600, "1"), "image/png"), 413,
     "2000x600 = 1,200,000 pixels, over the server's limit of 1,000,000"),
    ("corrupt", ("cut.png", _png(64, 64)[:-40], "image/png"), 400, "cut.png"),
]


@pytest.mark.parametrize("part,status,fragment", [c[1:] for c in BAD_UPLOADS],
                         ids=[c[0] for c in BAD_UPLOADS])
def test_bad_upload_gets_a_4xx_one_line_and_the_server_goes_on(
        client: TestClient, bottle_dir: Path, part: tuple[str, bytes, str], status: int,
        fragment: str) -> None:
    r = client.post("/predict", files={"file": part})
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert fragment in message and "\n" not in message
    assert _post(client, bottle_dir / GOOD).status_code == 200


@pytest.mark.parametrize("kwargs,status,fragment", [
    (dict(content=b"\x89PNG", headers={"content-type": "image/png"}), 415,
     "send the image as multipart/form-data in the field 'file'"),
    (dict(data={"picture": "x"}, files={"other": ("a.png", b"x", "image/png")}), 400,
     "no file: send the image as multipart/form-data in the field 'file'"),
    (dict(files=[("file", ("a.png", b"1", "image/png")), ("file", ("b.png", b"2", "image/png"))]),
     400, "Too many files"),
], ids=["raw-body", "no-file-field", "two-files"])
def test_malformed_requests_get_a_4xx_one_line(client: TestClient, bottle_dir: Path,
                                               kwargs: dict, status: int, fragment: str) -> None:
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]
    bad_query = _post(client, bottle_dir / GOOD, query="?overlay=perhaps")
    assert bad_query.status_code == 400 and "overlay" in bad_query.json()["error"]
    assert _post(client, bottle_dir / GOOD).status_code == 200


def test_body_over_the_limit_is_refused_without_a_content_length(client: TestClient) -> None:
    """A chunked upload (no Content-Length) is cut off once it passes the limit."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\""
            f"\r\nContent-Type: image/png\r\n\r\n").encode()

    def chunks():  # noqa: ANN202 - a generator makes httpx send chunked
        yield head
        for _ in range(40):
            yield bytes(10_000)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/predict", content=chunks(),
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "over the server's limit" in r.json()["error"]


def test_health_model_and_page(client: TestClient, served: tuple[distilad.Detector, Path]) -> None:
    det, model = served
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["method"] == "rd" and health["pending"] == 0
    info = client.get("/model").json()
    assert info["file"] == model.name and info["format"] == "distilad" and info["method"] == "rd"
    assert info["image_size"] == 64 and info["has_maps"] is True
    assert info["calibration"]["threshold"] == det.threshold == info["threshold"]
    assert info["calibration"]["target_fpr"] == 0.3
    assert info["library_version"] == distilad.__version__ == info["model_library_version"]
    assert info["params"]["backbone"] == "efficientnet_lite0" and "device" not in info["params"]
    assert info["limits"] == {"max_upload_bytes": 200_000, "max_pixels": 1_000_000,
                              "max_pending": 64}
    json.dumps(info, allow_nan=False)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "/predict?overlay=true" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the network
    missing = client.get("/nothing-here")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}


def test_concurrent_requests_are_all_answered_with_the_same_score(
        client: TestClient, bottle_dir: Path) -> None:
    body = (bottle_dir / DEFECT).read_bytes()
    scores: list[float] = []
    failures: list[str] = []

    def worker() -> None:
        for _ in range(3):
            r = _post(client, DEFECT, data=body)
            (scores.append(r.json()["score"]) if r.status_code == 200
             else failures.append(r.text))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and len(scores) == 12
    assert np.ptp(scores) == 0.0  # one model, one lock: no request saw another's state


def test_full_queue_answers_503_at_once(served: tuple[distilad.Detector, Path],
                                        bottle_dir: Path) -> None:
    det, _ = served
    app = create_app(det, max_pending=1)
    runner = app.state.runner
    with TestClient(app) as c:
        runner._enter()  # as if one request were being scored
        try:
            r = _post(c, bottle_dir / GOOD)
        finally:
            runner._leave()
    assert r.status_code == 503 and "server busy" in r.json()["error"]


def test_an_uncalibrated_model_is_refused(_tiny_mvtec_master: Path) -> None:
    det = distilad.create_detector("rd", **RD_TINY)
    with pytest.raises(distilad.errors.DistiladError, match="no calibrated threshold"):
        create_app(det)


@pytest.mark.parametrize("extra,fragment", [
    (["-p", "70000"], "port must be 0..65535, got 70000"),
    (["--max-pixels", "lots"], "--max-pixels must be a positive pixel count or 'none'"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be above 0"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--host", "no-such-host.invalid"], "cannot listen on host 'no-such-host.invalid'"),
], ids=["port", "max-pixels", "max-upload", "threads", "host"])
def test_serve_command_refuses_bad_arguments_in_one_line(
        served: tuple[distilad.Detector, Path], extra: list[str], fragment: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, model = served
    assert main(["serve", str(model), *extra]) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines


def test_serve_command_refuses_a_taken_port_and_a_bad_model(
        served: tuple[distilad.Detector, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, model = served
    from distilad.serve.server import bind_socket

    taken = bind_socket("127.0.0.1", 0)
    try:
        port = str(taken.getsockname()[1])
        assert main(["serve", str(model), "-p", port]) == EXIT_USER_ERROR
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0]
    finally:
        taken.close()
    junk = tmp_path / "junk.distilad"
    junk.write_bytes(b"not a model")
    assert main(["serve", str(junk)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a distilad model file" in err[0]


def test_serve_without_the_extra_says_how_to_install_it(
        served: tuple[distilad.Detector, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, model = served
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert main(["serve", str(model)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'distilad[serve]'" in err[0] and "uvicorn" in err[0]


def test_results_md_shows_a_load_test_record_and_counts_wrong_scores_as_lost() -> None:
    from distilad.bench.results import render

    record = {"kind": "load_serve", "model": "rd test", "clients": 4, "requests_per_client": 200,
              "requests_sent": 800, "lost": 1, "wrong_score": 2, "server_threads": 2,
              "throughput_rps": 12.345, "latency_ms": {"p50": 300.4, "p99": 512.6},
              "single_client_latency_ms": {"p50": 70.2},
              "server_timing_median_ms": {"wait": 220.0, "score": 75.0},
              "server_rss_mb": {"after_warmup": 900.0, "end": 905.0, "max": 910.0},
              "load_average_1min_before_after": [1.0, 1.5], "cpu_count": 2,
              "_file": "load_serve_x.json"}
    text = render([record])
    assert "## Serving: load test of `distilad serve`" in text
    assert ("| rd test | 4 x 200 | 2 | 12.3 | 300 / 513 | 70 | 220 / 75 | 3 of 800 | "
            "900 / 905 / 910 | 1.0 / 1.5 (2 cores) | `load_serve_x.json` |") in text


def test_an_exported_onnx_model_is_served_with_onnxruntimes_scores(
        served: tuple[distilad.Detector, Path], tmp_path: Path, bottle_dir: Path) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install -e '.[export]')")
    pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install -e '.[export]')")
    from distilad.onnx_model import OnnxModel

    det, _ = served
    onnx_file = det.export_onnx(tmp_path / "tiny.onnx", check=False)
    want = OnnxModel(onnx_file, device="cpu").score(image_files([bottle_dir / DEFECT]))
    client = TestClient(create_app(str(onnx_file), device="cpu"))
    got = _post(client, bottle_dir / DEFECT, query="?overlay=true").json()
    assert abs(got["score"] - want.image_scores[0]) <= 1e-6 and got["label"] == "anomalous"
    assert got["overlay_png"]
    info = client.get("/model").json()
    assert info["format"] == "onnx" and info["file"] == "tiny.onnx" and info["method"] == "rd"
    assert info["threshold"] == pytest.approx(det.threshold, rel=1e-6)
