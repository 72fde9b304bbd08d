"""Every argument of fit / test / predict / demo / bench with bad values: exit status 2, exactly
one line on stderr that says what was wrong, nothing written, and nothing trained (the errors
come before any work: training and the benchmark runner are replaced by functions that fail)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
import torch

from distilad.cli import EXIT_USER_ERROR, main

# (id, argv with placeholders, fragment of the message). Placeholders: {data} a tiny MVTec-style
# category, {model} an (untrained) model file, {out} a path that does not exist yet, {file} an
# existing text file, {folder} an existing empty folder, {busy} a non-empty folder, {bomb} a
# folder holding a 14000x14000 PNG header, {corrupt} a folder holding a broken .png, {junk}
# a file that is not a model, {ro} a location that cannot be written.
FIT = ["fit", "rd", "{data}", "-o", "{out}/m.distilad"]
DEMO = ["demo", "--data", "{data}", "-o", "{out}/demo"]
BENCH = ["bench", "--dataset", "mnist", "--classes", "0", "--results", "{out}/res",
         "--markdown", "{out}/RESULTS.md", "--feature-cache", "none"]

CASES: list[tuple[str, list[str], str]] = [
    # fit: positional arguments
    ("fit-method", ["fit", "nosuch", "{data}", "-o", "{out}/m.distilad"], "unknown method 'nosuch'"),
    ("fit-data-missing", ["fit", "rd", "{out}/none", "-o", "{out}/m.distilad"],
     "no such file or folder"),
    ("fit-data-empty", ["fit", "rd", "{folder}", "-o", "{out}/m.distilad"], "no images"),
    ("fit-data-text", ["fit", "rd", "{file}", "-o", "{out}/m.distilad"], "not a supported image"),
    ("fit-data-bomb", ["fit", "rd", "{bomb}", "-o", "{out}/m.distilad"],
     "14000x14000 = 196,000,000 pixels, over the limit"),
    ("fit-data-corrupt", ["fit", "rd", "{corrupt}", "-o", "{out}/m.distilad"], "cannot read image"),
    ("fit-data-one-image", ["fit", "rd", "{one}", "-o", "{out}/m.distilad"],
     "need at least 2 normal images"),
    ("fit-data-two-images", ["fit", "rd", "{two}", "-o", "{out}/m.distilad"],
     "rd needs at least 2 training images"),
    # fit: output
    ("fit-out-exists", ["fit", "rd", "{data}", "-o", "{file}"], "exists; choose another path"),
    ("fit-out-folder", ["fit", "rd", "{data}", "-o", "{folder}", "--overwrite"], "is a folder"),
    ("fit-out-under-file", ["fit", "rd", "{data}", "-o", "{file}/m.distilad"], "is not a folder"),
    ("fit-out-readonly", ["fit", "rd", "{data}", "-o", "{ro}/m.distilad"], "is not writable"),
    ("fit-out-missing", ["fit", "rd", "{data}"], "the following arguments are required: -o"),
    # fit: method options
    ("fit-epochs-0", [*FIT, "--epochs", "0"], "rd: epochs must be an integer >= 1, got 0"),
    ("fit-epochs-neg", [*FIT, "--epochs", "-1"], "rd: epochs must be an integer >= 1, got -1"),
    ("fit-epochs-text", [*FIT, "--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
    ("fit-image-size-100", [*FIT, "--image-size", "100"], "nearest valid: 96 or 128"),
    ("fit-image-size-0", [*FIT, "--image-size", "0"], "image_size must be a multiple of 32"),
    ("fit-batch-size-0", [*FIT, "--batch-size", "0"], "rd: batch_size must be an integer >= 2"),
    ("fit-batch-size-1", [*FIT, "--batch-size", "1"], "rd: batch_size must be an integer >= 2"),
    ("fit-seed-neg", [*FIT, "--seed", "-1"], "rd: seed must be an integer in 0..4294967295"),
    ("fit-seed-text", [*FIT, "--seed", "x"], "argument --seed: invalid int value"),
    ("fit-device-bogus", [*FIT, "--device", "gpu"], "rd: device must be 'auto', 'cpu'"),
    ("fit-backbone-unknown", [*FIT, "--backbone", "nonet"], "rd: unknown backbone 'nonet'"),
    ("fit-backbone-needs-weights", [*FIT, "--backbone", "resnet18"],
     "teacher resnet18 needs ImageNet weights"),
    ("fit-weights-missing", [*FIT, "--weights", "{out}/w.pth"], "weights must be None or 'random'"),
    ("fit-weights-junk", [*FIT, "--weights", "{junk}"], "cannot read weights file"),
    ("fit-set-novalue", [*FIT, "--set", "novalue"], "--set expects KEY=VALUE"),
    ("fit-set-nokey", [*FIT, "--set", "=3"], "--set expects KEY=VALUE"),
    ("fit-set-unknown", [*FIT, "--set", "imagesize=64"], "did you mean image_size?"),
    ("fit-set-lr-text", [*FIT, "--set", "lr=abc"], "rd: lr must be a number > 0, got 'abc'"),
    ("fit-set-lr-0", [*FIT, "--set", "lr=0"], "rd: lr must be a number > 0, got 0"),
    ("fit-set-lr-nan", [*FIT, "--set", "lr=NaN"], "rd: lr must be a number > 0, got nan"),
    ("fit-set-target-fpr", [*FIT, "--set", "target_fpr=1.5"], "target_fpr must be a number in [0, 1)"),
    ("fit-set-holdout", [*FIT, "--set", "holdout_fraction=0"], "holdout_fraction must be a number in (0, 1)"),
    ("fit-set-betas", [*FIT, "--set", "betas=[0.5]"], "betas must be a list of 2 values"),
    ("fit-set-betas-1", [*FIT, "--set", "betas=[0.5, 1]"], "each a number in [0, 1)"),
    ("fit-set-sigma-neg", [*FIT, "--set", "sigma=-1"], "sigma must be a number >= 0"),
    ("fit-set-sigma-text", [*FIT, "--set", "sigma=wide"], "sigma must be a number >= 0, got 'wide'"),
    ("fit-set-decoder-blocks", [*FIT, "--set", "decoder_blocks=[1,1]"], "decoder_blocks must be a list of 3"),
    ("fit-set-ocbe-blocks", [*FIT, "--set", "ocbe_blocks=0"], "ocbe_blocks must be an integer >= 1"),
    ("fit-set-score-batch", [*FIT, "--set", "score_batch_size=0"], "score_batch_size must be"),
    ("fit-set-image-score", [*FIT, "--set", "image_score=median"], "one of 'max', 'mean'"),
    ("fit-set-precise-bn", [*FIT, "--set", "precise_bn=1"], "precise_bn must be true or false"),
    ("fit-preset-unknown", [*FIT, "--preset", "shiny"], "rd: preset must be one of 'none', 'surface'"),
    ("fit-preset-other-method", ["fit", "edegan", "{data}", "-o", "{out}/m.distilad", "--preset",
                                 "surface"], "edegan: unknown argument(s) preset"),
    ("fit-set-lr-schedule", [*FIT, "--set", "lr_schedule=step"], "one of 'constant', 'cosine'"),
    ("fit-set-feature-cache", [*FIT, "--set", 'feature_cache="{file}"'], "is not a folder"),
    ("fit-set-progress", [*FIT, "--set", "progress=2"], "progress must be true or false"),
    ("fit-set-epochs-float", [*FIT, "--set", "epochs=2.5"], "epochs must be an integer >= 1, got 2.5"),
    ("edegan-image-size", ["fit", "edegan", "{data}", "-o", "{out}/m", "--image-size", "48"],
     "edegan: image_size must be a power of two >= 16, got 48; nearest valid: 32 or 64"),
    ("edegan-channels", ["fit", "edegan", "{data}", "-o", "{out}/m", "--set", "channels=2"],
     "channels must be one of 'auto', 1, 3"),
    ("edegan-score", ["fit", "edegan", "{data}", "-o", "{out}/m", "--set", "score=x"],
     "one of 'latent', 'reconstruction'"),
    ("edegan-width", ["fit", "edegan", "{data}", "-o", "{out}/m", "--set", "width=0"],
     "width must be an integer >= 1"),
    ("edegan-w-con", ["fit", "edegan", "{data}", "-o", "{out}/m", "--set", "w_con=-1"],
     "w_con must be a number >= 0"),
    ("edegan-batch", ["fit", "edegan", "{data}", "-o", "{out}/m", "--batch-size", "0"],
     "edegan: batch_size must be an integer >= 1"),
    ("pkdgan-epochs", ["fit", "pkdgan", "{data}", "-o", "{out}/m", "--epochs", "3"],
     "pkdgan: epochs is not used by pkdgan; set teacher_epochs, step1_epochs and step2_epochs"),
    ("pkdgan-schedule", ["fit", "pkdgan", "{data}", "-o", "{out}/m", "--set", "schedule=x"],
     "schedule must be one of 'two-step', 'fixed', 'joint', 'alone'"),
    ("pkdgan-no-student-epochs", ["fit", "pkdgan", "{data}", "-o", "{out}/m", "--set",
                                  "step1_epochs=0", "--set", "step2_epochs=0"],
     "step1_epochs + step2_epochs must be at least 1"),
    ("pkdgan-teacher-epochs", ["fit", "pkdgan", "{data}", "-o", "{out}/m", "--set",
                               "teacher_epochs=0"], "teacher_epochs must be an integer >= 1"),
    ("pkdgan-teacher-cache", ["fit", "pkdgan", "{data}", "-o", "{out}/m", "--set",
                              'teacher_cache="{file}"'], "teacher_cache must be None or a folder"),
    ("fit-unknown-option", [*FIT, "--bogus"], "unrecognized arguments: --bogus"),
    # test
    ("test-model-missing", ["test", "{out}/none.distilad", "{data}", "-o", "{out}/r"],
     "model file not found"),
    ("test-model-junk", ["test", "{junk}", "{data}", "-o", "{out}/r"], "not a distilad model"),
    ("test-data-missing", ["test", "{model}", "{out}/none", "-o", "{out}/r"], "no such file or folder"),
    ("test-data-unlabelled", ["test", "{model}", "{data}/train/good", "-o", "{out}/r"], "no labels"),
    ("test-out-busy", ["test", "{model}", "{data}", "-o", "{busy}"], "is not empty"),
    ("test-out-file", ["test", "{model}", "{data}", "-o", "{file}"], "is not a folder"),
    ("test-device", ["test", "{model}", "{data}", "-o", "{out}/r", "--device", "gpu"],
     "device must be 'auto', 'cpu'"),
    # predict
    ("predict-model-missing", ["predict", "{out}/none.distilad", "{data}/test", "-o", "{out}/p"],
     "model file not found"),
    ("predict-inputs-missing", ["predict", "{model}", "{out}/none.png", "-o", "{out}/p"],
     "no such file or folder"),
    ("predict-inputs-text", ["predict", "{model}", "{file}", "-o", "{out}/p"], "not a supported image"),
    ("predict-inputs-bomb", ["predict", "{model}", "{bomb}", "-o", "{out}/p"], "over the limit"),
    ("predict-out-busy", ["predict", "{model}", "{data}/test", "-o", "{busy}"], "is not empty"),
    ("predict-device", ["predict", "{model}", "{data}/test", "-o", "{out}/p", "--device", "x"],
     "device must be"),
    # demo
    ("demo-data-missing", ["demo", "--data", "{out}/none", "-o", "{out}/demo"], "demo data not found"),
    ("demo-out-busy", ["demo", "--data", "{data}", "-o", "{busy}"], "is not empty"),
    ("demo-epochs", [*DEMO, "--epochs", "0"], "rd: epochs must be an integer >= 1"),
    ("demo-image-size", [*DEMO, "--image-size", "100"], "nearest valid: 96 or 128"),
    ("demo-batch-size", [*DEMO, "--batch-size", "0"], "batch_size must be"),
    ("demo-seed", [*DEMO, "--seed", "-3"], "seed must be"),
    ("demo-device", [*DEMO, "--device", "tpu"], "device must be"),
    ("demo-backbone", [*DEMO, "--backbone", "nonet"], "unknown backbone"),
    ("demo-weights", [*DEMO, "--weights", "{out}/none.pth"], "no such file"),
    ("demo-set", [*DEMO, "--set", "lr=abc"], "lr must be a number > 0"),
    # bench
    ("bench-method", ["bench", "--method", "nosuch", "--dataset", "mnist"], "unknown method"),
    ("bench-dataset", ["bench", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    ("bench-dataset-missing", ["bench"], "the following arguments are required: --dataset"),
    ("bench-protocol", [*BENCH, "--protocol", "x"], "unknown protocol 'x'"),
    ("bench-classes", [*BENCH, "--classes", "12"], "classes are 0..9"),
    ("bench-seeds-text", [*BENCH, "--seeds", "a,b"], "--seeds expects comma-separated integers"),
    ("bench-seeds-neg", [*BENCH, "--seeds", "-1"], "seed must be an integer"),
    ("bench-set", [*BENCH, "--set", "lr=abc"], "rd: lr must be a number > 0, got 'abc'"),
    ("bench-set-epochs", [*BENCH, "--set", "epochs=0"], "epochs must be an integer >= 1"),
    ("bench-set-pkdgan-epochs", [*BENCH, "--method", "pkdgan", "--set", "epochs=2"],
     "epochs is not used by pkdgan"),
    ("bench-name", [*BENCH, "--name", "a/b"], "--name 'a/b' must be"),
    ("bench-data-root", [*BENCH, "--data-root", "{out}/none"], "--data-root"),
    ("bench-results-file", ["bench", "--dataset", "mnist", "--results", "{file}"],
     "results folder"),
    ("bench-markdown-folder", [*BENCH, "--markdown", "{folder}"], "--markdown file"),
    ("bench-feature-cache-file", ["bench", "--dataset", "mnist", "--results", "{out}/res",
                                  "--feature-cache", "{file}"], "feature_cache"),
]


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (a few bytes: nothing is decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, _tiny_mvtec_master: Path) -> dict[str, str]:
    """The input files and folders the placeholders stand for (made once, read-only use)."""
    import shutil

    from distilad import create_detector
    from distilad.calibration import Calibration

    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()
    (root / "busy").mkdir()
    (root / "busy" / "keep.txt").write_text("mine")
    (root / "bomb").mkdir()
    _png_header(root / "bomb" / "huge.png", 14000, 14000)
    good = sorted((_tiny_mvtec_master / "train" / "good").glob("*.jpg"))
    shutil.copy(good[0], root / "bomb" / good[0].name)
    (root / "corrupt").mkdir()
    (root / "corrupt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    for name, n in (("one", 1), ("two", 2)):
        (root / name).mkdir()
        for p in good[:n]:
            shutil.copy(p, root / name / p.name)
    (root / "junk.bin").write_bytes(b"\0garbage\xff" * 20)
    # a model file made without training (what the commands need is a readable model)
    det = create_detector("edegan", image_size=16, width=2, nz=2, channels=3, device="cpu")
    det._build()
    det.calibration = Calibration(threshold=1.0, median=0.0, target_fpr=0.01, n_holdout=10)
    det._fitted = True
    model = det.save(root / "model.distilad")
    return {"data": str(_tiny_mvtec_master), "model": str(model), "file": str(root / "notes.txt"),
            "folder": str(root / "empty"), "busy": str(root / "busy"), "bomb": str(root / "bomb"),
            "corrupt": str(root / "corrupt"), "junk": str(root / "junk.bin"),
            "one": str(root / "one"), "two": str(root / "two"), "ro": "/proc/distilad-test"}


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training and benchmark runs fail the test if they start; the tree counts as committed."""
    from distilad.bench import runner
    from distilad.detector import _REGISTRY, _import_methods

    def trained(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the bad input was refused")

    _import_methods()
    for cls in _REGISTRY.values():
        monkeypatch.setattr(cls, "_fit", trained)
    monkeypatch.setattr(runner, "execute", trained)
    monkeypatch.setattr(runner, "code_version", lambda: ("0" * 40, []))


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("argv,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2(argv: list[str], fragment: str, inputs: dict[str, str],
                                   no_work: None, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    if "{ro}" in " ".join(argv) and not os.path.isdir("/proc"):
        pytest.skip("no /proc: no location that even root cannot write")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # outputs with default paths would land here and be seen
    monkeypatch.delenv("DISTILAD_MAX_IMAGE_PIXELS", raising=False)
    watched = [Path(v) for k, v in inputs.items() if k not in ("data", "ro")]
    before = {str(p): _tree(p) if p.is_dir() else p.stat().st_mtime_ns for p in watched}
    args = [a.format(out=out, **inputs) for a in argv]
    try:
        rc = main(args)
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    assert rc == EXIT_USER_ERROR
    err = capsys.readouterr().err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert lines[0].startswith("distilad: error: ")
    assert fragment.format(**inputs) in lines[0]
    assert "Traceback" not in err
    # nothing written: no output, nothing in the working folder, inputs untouched
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    after = {str(p): _tree(p) if p.is_dir() else p.stat().st_mtime_ns for p in watched}
    assert after == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("cmd", ["fit", "test", "predict", "demo"])
def test_cuda_without_gpu(cmd: str, inputs: dict[str, str], no_work: None, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = {"fit": [*FIT, "--device", "cuda"], "demo": [*DEMO, "--device", "cuda"],
            "test": ["test", "{model}", "{data}", "-o", "{out}/r", "--device", "cuda"],
            "predict": ["predict", "{model}", "{data}/test", "-o", "{out}/p", "--device",
                        "cuda:0"]}[cmd]
    assert main([a.format(out=tmp_path / "out", **inputs) for a in argv]) == EXIT_USER_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot be used: CUDA is not available here" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_fit_read_only_folder(inputs: dict[str, str], no_work: None, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["fit", "rd", inputs["data"], "-o", str(ro / "m.distilad")]) == EXIT_USER_ERROR
    finally:
        ro.chmod(0o755)
    assert "is not writable" in capsys.readouterr().err and not any(ro.iterdir())


def test_pixel_limit_can_be_raised(inputs: dict[str, str], monkeypatch: pytest.MonkeyPatch
                                   ) -> None:
    """The limit the bomb message names is the one that applies, and the override works."""
    from distilad.data.images import read_image_size
    from distilad.errors import DataError

    huge = Path(inputs["bomb"]) / "huge.png"
    with pytest.raises(DataError, match="DISTILAD_MAX_IMAGE_PIXELS=196000000"):
        read_image_size(huge)
    monkeypatch.setenv("DISTILAD_MAX_IMAGE_PIXELS", "196000000")
    assert read_image_size(huge) == (14000, 14000)
    monkeypatch.setenv("DISTILAD_MAX_IMAGE_PIXELS", "100")
    small = next(p for p in Path(inputs["bomb"]).iterdir() if p.suffix == ".jpg")
    with pytest.raises(DataError, match="over the limit of 100"):
        read_image_size(small)
    monkeypatch.setenv("DISTILAD_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(DataError, match="positive pixel count"):
        read_image_size(small)


def test_fit_prints_calibration_warning_once(inputs: dict[str, str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Two held-out normals cannot back target_fpr=0.01: one `distilad: warning:` line with the
    numbers, and the model is still written (a tiny EDE-GAN, one epoch)."""
    out = tmp_path / "m.distilad"
    rc = main(["fit", "edegan", inputs["data"], "-o", str(out), "--image-size", "16", "--epochs",
               "1", "--device", "cpu", "-q", "--set", "width=2", "--set", "nz=2", "--set",
               "holdout_fraction=0.15"])
    assert rc == 0 and out.is_file()
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("distilad: warning: calibration: 2 held-out normal images "
                                  "cannot back target_fpr=0.01 (the smallest false-positive rate "
                                  "they can show is 1/2 = 0.5)")
