"""Tests of Reverse Distillation: loss, anomaly map, networks, and the fitted detector contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

import distilad
from distilad.data import ArrayImageSet, mvtec_test, mvtec_train, read_image
from distilad.detector import FORMAT_VERSION, holdout_split, read_model_config
from distilad.errors import DataError, DistiladError, ModelFileError, NotFittedError
from distilad.evaluate import compute_metrics
from distilad.methods.rd.detector import ReverseDistillation
from distilad.methods.rd.model import Student, anomaly_map, gaussian_blur, rd_loss

FIT = dict(image_size=64, epochs=30, batch_size=4, progress=False, device="cpu", seed=0)

# --- loss and map --------------------------------------------------------------------------------


def _feats(shapes: list[tuple[int, ...]], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]


def test_rd_loss_matches_hand_formula() -> None:
    shapes = [(3, 8, 16, 16), (3, 16, 8, 8), (3, 32, 4, 4)]
    t, s = _feats(shapes, 0), _feats(shapes, 1)
    s[1] = t[1] * 2.0 + 0.1 * s[1]  # one scale nearly aligned
    want = 0.0
    for a, b in zip(t, s, strict=True):
        a2, b2 = a.numpy().reshape(3, -1), b.numpy().reshape(3, -1)
        cos = (a2 * b2).sum(1) / (np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1))
        want += float(np.mean(1.0 - cos))
    got = rd_loss(t, s)
    assert got.shape == () and float(got) == pytest.approx(want, rel=1e-10)
    # identical maps: zero; opposite maps: 2 per scale
    assert float(rd_loss(t, [x.clone() for x in t])) == pytest.approx(0.0, abs=1e-12)
    assert float(rd_loss(t, [-x for x in t])) == pytest.approx(2.0 * len(t), rel=1e-12)
    # scale-invariant per sample
    scaled = [x * torch.tensor([1.0, 5.0, 0.1], dtype=x.dtype).view(3, 1, 1, 1) for x in s]
    assert float(rd_loss(t, scaled)) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("sigma", [4.0, 2.5])
def test_gaussian_blur_matches_scipy(sigma: float) -> None:
    rng = np.random.default_rng(0)
    m = rng.random((64, 64)).astype(np.float64)
    m[10:20, 40:60] += 3.0
    want = ndimage.gaussian_filter(m, sigma=sigma, mode="reflect", truncate=4.0)
    got = gaussian_blur(torch.from_numpy(m)[None, None], sigma)[0, 0].numpy()
    assert got.shape == (64, 64)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # float32 too (what the detector uses)
    got32 = gaussian_blur(torch.from_numpy(m.astype(np.float32))[None, None], sigma)[0, 0].numpy()
    np.testing.assert_allclose(got32, want, atol=1e-5, rtol=0)
    # sigma 0: no blur
    x = torch.from_numpy(m)[None, None]
    assert torch.equal(gaussian_blur(x, 0.0), x)


@pytest.mark.parametrize(("size", "sigma"), [(32, 10.0), (8, 4.0)])
def test_gaussian_blur_radius_wider_than_map(size: int, sigma: float) -> None:
    """A blur radius (4 sigma) beyond the map size (image_size=32 with sigma=10) reflects again,
    as scipy does: the map keeps its size and its values (it came back 16x16, or crashed)."""
    m = np.random.default_rng(1).random((size, size + 3))
    want = ndimage.gaussian_filter(m, sigma=sigma, mode="reflect", truncate=4.0)
    got = gaussian_blur(torch.from_numpy(m)[None, None], sigma)[0, 0].numpy()
    assert got.shape == m.shape
    np.testing.assert_allclose(got, want, atol=1e-10, rtol=0)
    t = [torch.rand(2, 4, size // 4, size // 4)]
    assert anomaly_map(t, [torch.rand_like(t[0])], size, sigma).shape == (2, size, size)


def test_anomaly_map_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(2, 5, 16, 16, generator=g), torch.randn(2, 7, 8, 8, generator=g)]
    s = [torch.randn(2, 5, 16, 16, generator=g), torch.randn(2, 7, 8, 8, generator=g)]
    # same resolution and no blur: per-pixel 1 - cos over channels
    m = anomaly_map(t[:1], s[:1], 16, sigma=0.0)
    a, b = t[0].numpy(), s[0].numpy()
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    np.testing.assert_allclose(m.numpy(), 1 - cos, atol=1e-5)
    # two scales: sum of the upsampled (align_corners=True) maps, then the scipy-equal blur
    full = anomaly_map(t, s, 32, sigma=4.0)
    assert full.shape == (2, 32, 32)
    parts = []
    for x, y in zip(t, s, strict=True):
        c = 1 - torch.nn.functional.cosine_similarity(x, y, dim=1)
        parts.append(torch.nn.functional.interpolate(c[:, None], size=(32, 32), mode="bilinear",
                                                     align_corners=True)[:, 0])
    summed = (parts[0] + parts[1]).numpy()
    want = np.stack([ndimage.gaussian_filter(summed[i].astype(np.float64), 4.0, mode="reflect")
                     for i in range(2)])
    np.testing.assert_allclose(full.numpy(), want, atol=1e-5)
    # identical features: a zero map
    assert anomaly_map(t, [x.clone() for x in t], 32).abs().max() < 1e-5


# --- networks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [(24, 40, 112), (64, 128, 256)])
def test_student_shapes_mirror_teacher(channels: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    st = Student(channels, signed_features=True).eval()
    c1, c2, c3 = channels
    t = [torch.randn(2, c1, 16, 16), torch.randn(2, c2, 8, 8), torch.randn(2, c3, 4, 4)]
    with torch.no_grad():
        code = st.bottleneck(t)
        out = st(t)
    assert tuple(code.shape) == (2, 2 * c3, 2, 2)
    assert [tuple(o.shape) for o in out] == [tuple(x.shape) for x in t]


def test_student_signed_output_only_when_asked() -> None:
    torch.manual_seed(0)
    t = [torch.randn(2, 24, 16, 16), torch.randn(2, 40, 8, 8), torch.randn(2, 112, 4, 4)]
    with torch.no_grad():
        signed = Student((24, 40, 112), signed_features=True).eval()(t)
        relu = Student((24, 40, 112), signed_features=False).eval()(t)
    assert all((o < 0).any() for o in signed)
    assert all((o >= 0).all() for o in relu)


def test_holdout_split() -> None:
    tr, ho = holdout_split(12, 0.1, seed=0)
    assert len(ho) == 1 and len(tr) == 11
    assert sorted(np.concatenate([tr, ho]).tolist()) == list(range(12))
    tr2, ho2 = holdout_split(12, 0.1, seed=0)
    assert ho2.tolist() == ho.tolist()
    assert len(holdout_split(100, 0.25, 1)[1]) == 25
    assert len(holdout_split(2, 0.9, 1)[0]) == 1  # at least one of each
    with pytest.raises(DataError):
        holdout_split(1, 0.1, 0)


# --- the fitted detector -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(_tiny_mvtec_master: Path) -> ReverseDistillation:
    det = distilad.create_detector("rd", **FIT)
    assert isinstance(det, ReverseDistillation)
    return det.fit(_tiny_mvtec_master)


def _corrupt(img: np.ndarray) -> np.ndarray:
    bad = img.copy()
    bad[16:48, 16:48] = 0.0  # a large black square in the middle of the bottle
    return bad


def test_fit_info_and_loss_decreases(fitted: ReverseDistillation) -> None:
    info = fitted.fit_info
    assert info["n_train"] == 11 and info["n_holdout"] == 1 and info["epochs"] == 30
    hist = info["loss_history"]
    assert len(hist) == 30 and all(np.isfinite(hist))
    assert hist[0] > hist[-1] and hist[-1] < 0.5 * hist[0]
    assert 0 < hist[0] <= 6.0  # 3 scales, 1 - cos <= 2 each
    assert fitted.calibration is not None and fitted.calibration.n_holdout == 1
    assert fitted.teacher.channels == (24, 40, 112)


def test_maps_at_input_resolution(fitted: ReverseDistillation, _tiny_mvtec_master: Path) -> None:
    img = read_image(_tiny_mvtec_master / "test" / "good" / "000.jpg")  # 64 x 64 = image_size
    r = fitted.score(img[None])
    assert r.anomaly_maps.shape == (1, 64, 64) and r.anomaly_maps.dtype == np.float32
    # at the model's own resolution the image score is the map's maximum
    assert r.image_scores[0] == pytest.approx(float(r.anomaly_maps[0].max()), rel=1e-6)
    # other sizes: maps are resized back to each input's size
    rng = np.random.default_rng(0)
    other = (rng.random((80, 60, 3)) * 255).astype(np.uint8)
    r2 = fitted.score(other[None])
    assert r2.anomaly_maps.shape == (1, 80, 60)
    r3 = fitted.score([img, other])
    assert isinstance(r3.anomaly_maps, list)
    assert [m.shape for m in r3.anomaly_maps] == [(64, 64), (80, 60)]
    np.testing.assert_allclose(r3.image_scores, [r.image_scores[0], r2.image_scores[0]], rtol=1e-5)
    # gray input works too (repeated to 3 channels)
    r4 = fitted.score(img.mean(-1, keepdims=True)[None])
    assert r4.anomaly_maps.shape == (1, 64, 64) and np.isfinite(r4.image_scores).all()
    assert r.names == ["0"] and r.normalized_scores is not None and r.labels is not None


def test_corrupted_image_scores_higher(fitted: ReverseDistillation,
                                       _tiny_mvtec_master: Path) -> None:
    imgs = [read_image(p) for p in sorted((_tiny_mvtec_master / "test" / "good").glob("*.jpg"))]
    r = fitted.score(np.stack(imgs + [_corrupt(i) for i in imgs]))
    good, bad = r.image_scores[:3], r.image_scores[3:]
    assert (bad > 1.5 * good).all(), (good, bad)
    assert (r.labels[3:] == 1).all() and (r.normalized_scores[3:] == 1.0).all()
    # the map is high where the square is
    amap = r.anomaly_maps[3]
    inside = amap[20:44, 20:44].mean()
    outside = np.concatenate([amap[:8].ravel(), amap[-8:].ravel()]).mean()
    assert inside > 2 * outside


def test_real_defects_are_found(fitted: ReverseDistillation, _tiny_mvtec_master: Path) -> None:
    test = mvtec_test(_tiny_mvtec_master)
    m = compute_metrics(test, fitted.score(test))
    assert m["n_images"] == 12 and m["n_anomalous"] == 9
    assert m["image_auroc"] >= 0.85  # 1.0 with this seed on CPU
    assert m["pixel_auroc"] >= 0.85
    assert 0.0 <= m["aupro"] <= 1.0


def test_save_load_identical(fitted: ReverseDistillation, tmp_path: Path,
                             _tiny_mvtec_master: Path) -> None:
    path = fitted.save(tmp_path / "m.distilad")
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    cfg = read_model_config(path)
    assert cfg["method"] == "rd" and cfg["format_version"] == FORMAT_VERSION
    assert cfg["params"]["image_size"] == 64 and "device" not in cfg["params"]
    assert cfg["state"]["teacher"] == fitted.teacher.identity
    loaded = distilad.load_detector(path, device="cpu")
    assert isinstance(loaded, ReverseDistillation)
    assert loaded.teacher.identity == fitted.teacher.identity
    assert loaded.calibration == fitted.calibration
    assert loaded.fit_info["loss_history"] == fitted.fit_info["loss_history"]
    test = mvtec_test(_tiny_mvtec_master)
    a, b = fitted.score(test), loaded.score(test)
    np.testing.assert_array_equal(a.image_scores, b.image_scores)
    np.testing.assert_array_equal(a.anomaly_maps, b.anomaly_maps)
    np.testing.assert_array_equal(a.labels, b.labels)
    # the teacher's weights came from the model file (not re-created at random)
    for (k, v), (k2, v2) in zip(fitted.teacher.state_dict().items(),
                                loaded.teacher.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_save_refuses_overwrite(fitted: ReverseDistillation, tmp_path: Path) -> None:
    path = tmp_path / "m.distilad"
    path.write_text("precious")
    with pytest.raises(DistiladError, match="overwrite"):
        fitted.save(path)
    assert path.read_text() == "precious"
    fitted.save(path, overwrite=True)
    assert read_model_config(path)["method"] == "rd"


def test_bad_model_files(fitted: ReverseDistillation, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    with pytest.raises(ModelFileError, match="not found"):
        distilad.load_detector(tmp_path / "missing.distilad")
    garbage = tmp_path / "garbage.distilad"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="garbage.distilad"):
        distilad.load_detector(garbage)
    text = tmp_path / "notes.distilad"
    text.write_text("a text file, not a model\n" * 20)
    with pytest.raises(ModelFileError, match="notes.distilad"):
        distilad.load_detector(text)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign), metadata={"author": "someone"})
    with pytest.raises(ModelFileError, match="not a distilad model"):
        distilad.load_detector(foreign)

    good = fitted.save(tmp_path / "good.distilad")
    cfg = read_model_config(good)
    tensors = load_file(str(good))
    # a newer format, an unknown method, a corrupt description, and a missing tensor
    for name, meta, tens, msg in [
        ("newer", {**cfg, "format_version": FORMAT_VERSION + 1}, tensors, "newer"),
        ("method", {**cfg, "method": "nope"}, tensors, "unknown method"),
        ("format", {**cfg, "format": "other"}, tensors, "not a distilad model"),
        ("missing", cfg, {k: v for k, v in tensors.items() if k != "student.decoder.stage1.0.conv1.weight"},
         "do not fit"),
    ]:
        p = tmp_path / f"{name}.distilad"
        save_file(tens, str(p), metadata={"distilad": json.dumps(meta)})
        with pytest.raises(ModelFileError, match=msg):
            distilad.load_detector(p)
    broken_json = tmp_path / "json.distilad"
    save_file(tensors, str(broken_json), metadata={"distilad": "{not json"})
    with pytest.raises(ModelFileError, match="corrupt"):
        distilad.load_detector(broken_json)
    # a real model file cut short
    data = good.read_bytes()
    cut = tmp_path / "cut.distilad"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.distilad"):
        distilad.load_detector(cut)


def test_arguments_and_state_errors(_tiny_mvtec_master: Path) -> None:
    with pytest.raises(DistiladError, match="unknown argument.*bogus"):
        distilad.create_detector("rd", bogus=1)
    with pytest.raises(DistiladError, match="unknown method"):
        distilad.create_detector("no-such-method")
    assert "rd" in distilad.list_detectors()
    det = distilad.create_detector("rd", **FIT)
    with pytest.raises(NotFittedError):
        det.predict(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(NotFittedError):
        det.score(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(NotFittedError):
        det.save(Path("/nonexistent/never-written.distilad"))
    # fit takes normal images only
    with pytest.raises(DataError, match="normal images only"):
        det.fit(mvtec_test(_tiny_mvtec_master))
    arr = np.random.default_rng(0).random((4, 64, 64, 3), dtype=np.float32)
    with pytest.raises(DataError, match="normal images only"):
        det.fit(ArrayImageSet(arr, labels=[0, 0, 1, 0]))
    with pytest.raises(DataError, match="at least 2"):
        det.fit(arr[:1])


def test_fit_is_seeded(_tiny_mvtec_master: Path) -> None:
    train = mvtec_train(_tiny_mvtec_master)
    params = {**FIT, "epochs": 2}
    a = distilad.create_detector("rd", **params).fit(train)
    b = distilad.create_detector("rd", **params).fit(train)
    c = distilad.create_detector("rd", **{**params, "seed": 1}).fit(train)
    assert a.fit_info["loss_history"] == b.fit_info["loss_history"]
    assert a.fit_info["loss_history"] != c.fit_info["loss_history"]
    x = read_image(_tiny_mvtec_master / "test" / "good" / "000.jpg")[None]
    np.testing.assert_allclose(a.score(x).image_scores, b.score(x).image_scores, rtol=1e-6)
    p = a.predict(x)
    assert p.shape == (1,) and p.dtype == np.int64


def test_resnet18_teacher_model_loads_without_its_weights_file(tmp_path: Path) -> None:
    """A model saved with a file-weights teacher carries the teacher; the file is not needed."""
    import timm

    torch.manual_seed(0)
    wfile = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), wfile)
    rng = np.random.default_rng(0)
    imgs = rng.random((6, 64, 64, 3), dtype=np.float32)
    det = distilad.create_detector("rd", backbone="resnet18", weights=str(wfile), image_size=64,
                                   epochs=1, batch_size=4, progress=False, device="cpu",
                                   holdout_fraction=0.34)
    det.fit(imgs)
    assert det.fit_info["n_holdout"] == 2
    path = det.save(tmp_path / "r18.distilad")
    wfile.unlink()
    loaded = distilad.load_detector(path, device="cpu")
    assert loaded.teacher.channels == (64, 128, 256)
    assert loaded.teacher.identity == det.teacher.identity != "resnet18@random"
    np.testing.assert_array_equal(loaded.score(imgs).image_scores, det.score(imgs).image_scores)


def test_precise_bn_with_a_last_batch_of_one() -> None:
    """9 training images in batches of 4 leave a batch of one, which BatchNorm cannot take at
    32 px (1x1 code): training skips it and the BatchNorm recompute folds it into the batch
    before (it used to crash: 'Expected more than 1 value per channel')."""
    from distilad.methods.rd.detector import batch_bounds

    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]
    assert batch_bounds(8, 4) == [(0, 4), (4, 8)]
    assert batch_bounds(5, 8) == [(0, 5)] and batch_bounds(1, 4) == [(0, 1)]
    imgs = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    det = distilad.create_detector("rd", backbone="efficientnet_lite0", image_size=32, epochs=1,
                                   batch_size=4, ocbe_blocks=1, decoder_blocks=[1, 1, 1],
                                   holdout_fraction=0.1, precise_bn=True, progress=False,
                                   device="cpu")
    det.fit(imgs, validation=None)
    assert det.fit_info["n_train"] == 9
    bn = det.student.bottleneck.stage[0].bn3
    assert int(bn.num_batches_tracked) == 2  # the recompute saw two batches: 4 and 5 images
    assert np.isfinite(det.score(imgs).image_scores).all()


@pytest.mark.parametrize("size,shapes", [(256, ((24, 64), (40, 32), (112, 16))),
                                         (96, ((8, 24), (8, 12), (8, 6)))])
def test_anomaly_map_equals_upsample_sum_blur(size: int, shapes) -> None:
    """The matrix form of the map (per-axis operators) gives what bilinear upsampling, the sum
    over scales and the reflect-padded Gaussian blur give, step by step."""
    torch.manual_seed(0)
    t = [torch.randn(2, c, s, s) for c, s in shapes]
    s_ = [x + 0.3 * torch.randn_like(x) for x in t]
    total = sum(torch.nn.functional.interpolate(
        (1 - torch.nn.functional.cosine_similarity(a, b, dim=1))[:, None], size=(size, size),
        mode="bilinear", align_corners=True) for a, b in zip(t, s_, strict=True))
    want = gaussian_blur(total, 4.0)[:, 0]
    got = anomaly_map(t, s_, size, 4.0)
    assert got.shape == (2, size, size)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
