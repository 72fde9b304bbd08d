"""Declared arguments (distilad.params) and their use by every method at construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import distilad
from distilad.detector import _REGISTRY, _import_methods
from distilad.errors import DistiladError
from distilad.params import (
    Bool,
    Device,
    Float,
    ImageSize,
    Int,
    OneOf,
    Path,
    Seq,
    Text,
    check_params,
)

_import_methods()
METHODS = sorted(_REGISTRY)


@pytest.mark.parametrize("method", METHODS)
def test_every_argument_is_declared_and_defaults_pass(method: str) -> None:
    cls = _REGISTRY[method]
    assert set(cls.param_specs) == set(cls.defaults), "each default needs a declaration"
    assert set(cls.common_specs) == set(cls.common_defaults)
    assert not set(cls.retired_params) & set(cls.defaults)
    det = distilad.create_detector(method, device="cpu")
    # the defaults pass their own checks unchanged (tuples for sequences)
    for key, value in cls.defaults.items():
        assert det.params[key] == (tuple(value) if isinstance(value, list) else value), key
    assert det.get_params() == det.params and det.get_params() is not det.params


@pytest.mark.parametrize("method,kwargs,fragment", [
    ("rd", {"image_size": 100}, "rd: image_size must be a multiple of 32, at least 32, got 100; "
                                "nearest valid: 96 or 128"),
    ("rd", {"batch_size": 0}, "rd: batch_size must be an integer >= 2, got 0"),
    ("rd", {"lr": "abc"}, "rd: lr must be a number > 0, got 'abc'"),
    ("rd", {"target_fpr": 1.5}, "rd: target_fpr must be a number in [0, 1), got 1.5"),
    ("rd", {"epochs": 0}, "rd: epochs must be an integer >= 1, got 0"),
    ("rd", {"epochs": True}, "rd: epochs must be an integer >= 1, got True"),
    ("rd", {"holdout_fraction": 1.0}, "holdout_fraction must be a number in (0, 1), got 1.0"),
    ("rd", {"seed": -1}, "rd: seed must be an integer in 0..4294967295, got -1"),
    ("rd", {"device": "gpu"}, "rd: device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    ("rd", {"betas": "0.5,0.9"}, "betas must be a list of 2 values"),
    ("rd", {"decoder_blocks": [1, 0, 1]}, "decoder_blocks must be a list of 3 values, each an "
                                          "integer >= 1"),
    ("rd", {"sigma": -0.5}, "rd: sigma must be a number >= 0, got -0.5"),
    ("rd", {"weights": 3}, "weights must be None or 'random' or a path"),
    ("rd", {"imagesize": 64}, "unknown argument(s) imagesize (did you mean image_size?)"),
    ("edegan", {"image_size": 24}, "edegan: image_size must be a power of two >= 16, got 24; "
                                   "nearest valid: 16 or 32"),
    ("edegan", {"image_size": 8}, "nearest valid: 16"),
    ("edegan", {"channels": True}, "channels must be one of 'auto', 1, 3, got True"),
    ("edegan", {"w_adv": float("inf")}, "w_adv must be a number >= 0, got inf"),
    ("pkdgan", {"epochs": 4}, "pkdgan: epochs is not used by pkdgan"),
    ("pkdgan", {"step1_epochs": 0, "step2_epochs": 0}, "step1_epochs + step2_epochs"),
    ("pkdgan", {"student_nz": 0}, "student_nz must be an integer >= 1"),
])
def test_bad_values_refused_at_construction(method: str, kwargs: dict, fragment: str) -> None:
    with pytest.raises(DistiladError) as e:
        distilad.create_detector(method, **{"device": "cpu", **kwargs})
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_refused_with_reason() -> None:
    for device in ("cuda", "cuda:0", "CUDA"):
        with pytest.raises(DistiladError, match="cannot be used: CUDA is not available"):
            distilad.create_detector("rd", device=device)


def test_values_are_normalised() -> None:
    det = distilad.create_detector("rd", device="cpu", lr=1, betas=[0.5, 0.9], sigma=2,
                                   decoder_blocks=[1, 2, 3], seed=np.int64(3))
    assert det.params["lr"] == 1.0 and isinstance(det.params["lr"], float)
    assert det.params["betas"] == (0.5, 0.9) and det.params["decoder_blocks"] == (1, 2, 3)
    assert det.params["seed"] == 3 and type(det.params["seed"]) is int


def test_declarations_directly() -> None:
    assert Int(min=1).check(3) == 3
    for bad in (0, 2.0, True, "3", None):
        with pytest.raises(DistiladError):
            check_params("m", {"x": Int(min=1)}, {"x": bad})
    f = Float(0.0, 1.0, open_low=True, open_high=True)
    assert f.describe() == "a number in (0, 1)" and f.check(0.5) == 0.5
    assert Float(0.0).check(1) == 1.0 and isinstance(Float(0.0).check(1), float)
    for bad in (0.0, 1.0, math.nan, math.inf, "0.5", False):
        with pytest.raises(DistiladError):
            check_params("m", {"x": f}, {"x": bad})
    assert Float(0.0).describe() == "a number >= 0"
    assert OneOf(1, 3).check(3) == 3
    with pytest.raises(DistiladError, match="got True"):
        check_params("m", {"x": OneOf(1, 3)}, {"x": True})
    assert Bool().check(False) is False
    assert Seq(Int(min=0), 2).check([1, 2]) == (1, 2)
    with pytest.raises(DistiladError):
        check_params("m", {"x": Seq(Int(min=0), 2)}, {"x": [1, 2, 3]})
    assert Text().check("lite") == "lite"
    with pytest.raises(DistiladError):
        check_params("m", {"x": Text()}, {"x": ""})
    size = ImageSize(32, step=32, why="stride 32")
    assert [size.valid(v) for v in (32, 64, 48, 0, -32)] == [True, True, False, False, False]
    assert size.nearest(100) == [96, 128] and size.nearest(-5) == [32]
    p2 = ImageSize(16, power_of_two=True)
    assert p2.nearest(100) == [64, 128] and p2.nearest(17) == [16, 32] and p2.valid(256)
    assert Device().check("cpu") == "cpu" and Device().check(" AUTO ") == "auto"


def test_path_declaration(tmp_path) -> None:
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    spec = Path("file", special=("random",))
    assert spec.check(None) is None and spec.check("random") == "random"
    assert spec.check(f) == str(f)
    with pytest.raises(DistiladError, match="no such file"):
        check_params("m", {"w": spec}, {"w": str(tmp_path / "none.pth")})
    # a model loaded elsewhere keeps the name of the file it was trained from
    assert check_params("m", {"w": spec}, {"w": "/elsewhere/w.pth"}, check_files=False) == {
        "w": "/elsewhere/w.pth"}
    folder = Path("folder")
    assert folder.check(str(tmp_path / "new")) == str(tmp_path / "new")
    with pytest.raises(DistiladError, match="not a folder"):
        check_params("m", {"c": folder}, {"c": str(f)})


def _tiny_pkdgan() -> distilad.Detector:
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    det = distilad.create_detector("pkdgan", image_size=16, width=2, nz=2, student_width=1,
                                   student_nz=2, teacher_epochs=1, step1_epochs=1,
                                   step2_epochs=0, batch_size=8, device="cpu", progress=False,
                                   holdout_fraction=0.2)
    return det.fit(images, validation=None)


@pytest.mark.filterwarnings("ignore::distilad.errors.CalibrationWarning")
def test_pkdgan_model_from_before_epochs_was_refused_still_loads(tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    det = _tiny_pkdgan()
    path = det.save(tmp_path / "pk.distilad")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["distilad"])
    assert "epochs" not in meta["params"]
    meta["params"]["epochs"] = 15  # as older versions saved it
    old = tmp_path / "old.distilad"
    save_file(load_file(str(path)), str(old), metadata={"distilad": json.dumps(meta)})
    back = distilad.load_detector(old, device="cpu")
    assert "epochs" not in back.params and back.threshold == det.threshold


@pytest.mark.filterwarnings("ignore::distilad.errors.CalibrationWarning")
def test_set_params_on_fitted_detector() -> None:
    det = _tiny_pkdgan()
    assert det.set_params(progress=True, score_batch_size=4) is det
    assert det.params["score_batch_size"] == 4
    with pytest.raises(DistiladError, match="cannot change on a fitted detector"):
        det.set_params(width=4)
    with pytest.raises(DistiladError, match="score_batch_size must be"):
        det.set_params(score_batch_size=0)
    fresh = distilad.create_detector("edegan", device="cpu")
    fresh.set_params(epochs=3, image_size=32)
    assert fresh.get_params()["epochs"] == 3
    with pytest.raises(DistiladError, match="power of two"):
        fresh.set_params(image_size=30)
    assert fresh.params["image_size"] == 32  # a refused change leaves the detector as it was
