"""Tests of the validation split: synthetic defects (exact masks, seeded, every kind, any size),
the validation set, and the validation metrics ``Detector.fit`` stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distilad.data import ArrayImageSet
from distilad.data.validation import KINDS, make_defect, synthetic_defects, validation_set


def _images(n: int, h: int, w: int, c: int, seed: int = 0) -> ArrayImageSet:
    """Smooth random images (a blurred field plus a gradient), uint8."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, h // 4 + 1, w // 4 + 1, c))
    up = base.repeat(4, axis=1).repeat(4, axis=2)[:, :h, :w]
    grad = np.linspace(0, 0.3, w)[None, None, :, None]
    arr = np.clip(0.6 * up + grad, 0, 1)
    arr = (arr[..., 0] if c == 1 else arr) * 255
    return ArrayImageSet(arr.astype(np.uint8), names=[f"im{i}" for i in range(n)])


@pytest.mark.parametrize("h,w,c", [(32, 32, 1), (48, 80, 3), (300, 200, 3)])
def test_defects_masks_are_exactly_the_changed_pixels(h: int, w: int, c: int) -> None:
    normals = _images(8, h, w, c)
    defects = synthetic_defects(normals, seed=3)
    assert len(defects) == 8 and defects.has_masks
    assert defects.labels.tolist() == [1] * 8
    assert defects.kinds == list(KINDS) * 2  # cycled: every kind present
    for i in range(len(defects)):
        orig, img, mask = normals.image(i), defects.image(i), defects.mask(i)
        assert img.shape == orig.shape == (h, w, c) and img.dtype == np.float32
        assert mask.shape == (h, w) and mask.dtype == bool
        assert img.min() >= 0.0 and img.max() <= 1.0
        diff = np.abs(img - orig).max(axis=-1)
        assert np.all(diff[mask] > 0) and np.all(diff[~mask] == 0)
        # a visible defect, local (not the whole image)
        assert (diff > 0.02).sum() >= max(1, round(0.0005 * h * w))
        assert mask.mean() < 0.5, (defects.kinds[i], mask.mean())
        assert defects.names[i] == f"im{i}#{defects.kinds[i]}"
        assert defects.image_shape(i) == (h, w)


def test_defects_are_seeded_and_differ_between_seeds() -> None:
    normals = _images(4, 40, 40, 3)
    a, b = synthetic_defects(normals, 7), synthetic_defects(normals, 7)
    c = synthetic_defects(normals, 8)
    for i in range(4):
        assert np.array_equal(a.image(i), b.image(i)) and np.array_equal(a.mask(i), b.mask(i))
    assert any(not np.array_equal(a.mask(i), c.mask(i)) for i in range(4))
    # the same image asked for twice (masks after images, as metrics do) gives the same defect
    first = a.image(2).copy()
    a.image(0)
    assert np.array_equal(a.image(2), first)
    assert a.content_fingerprint == b.content_fingerprint != c.content_fingerprint


def test_flat_image_still_gets_a_visible_defect() -> None:
    flat = np.full((64, 64, 3), 0.5, dtype=np.float32)
    for kind in KINDS:  # a patch of a flat image pasted on itself changes nothing: redrawn
        img, mask = make_defect(flat, kind, np.random.default_rng(0))
        assert mask.any() and np.all(img[~mask] == 0.5)
        assert (np.abs(img - flat).max(axis=-1) > 0.02).sum() >= 2
    with pytest.raises(ValueError, match="unknown defect kind"):
        make_defect(flat, "bogus", np.random.default_rng(0))


def test_validation_set_labels_and_masks() -> None:
    normals = _images(5, 32, 32, 3)
    vset = validation_set(normals, None, seed=0)
    assert len(vset) == 10 and vset.labels.tolist() == [0] * 5 + [1] * 5 and vset.has_masks
    assert vset.mask(0) is None and vset.mask(7).any()
    assert np.array_equal(vset.image(1), normals.image(1))
    given = ArrayImageSet(np.zeros((3, 32, 32, 1), np.uint8), labels=[0, 0, 0])
    vset = validation_set(normals, given, seed=0)
    assert vset.labels.tolist() == [0] * 5 + [1] * 3 and not vset.has_masks
    assert vset.image(6).shape == (32, 32, 1)
    with pytest.raises(IndexError):
        vset.image(8)


# --- validation inside fit ----------------------------------------------------------------------
def test_fit_validates_without_scoring_the_holdout_twice(tiny_mvtec: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import distilad
    from distilad.data.validation import SyntheticDefectSet
    from distilad.evaluate import compute_metrics

    # a fixed scoring batch: "auto" measures it, and under load two scorings could batch (and
    # round) differently, which the exact comparison below must not depend on
    det = distilad.create_detector("rd", image_size=64, epochs=1, progress=False, device="cpu",
                                   holdout_fraction=0.34, score_batch_size=4)
    scored = []
    real_score = det._score

    def counting(images):
        scored.append(images)
        return real_score(images)

    monkeypatch.setattr(det, "_score", counting)
    det.fit(tiny_mvtec)
    # once for calibration (the held-out normals), once for their synthetic defects
    assert len(scored) == 2 and isinstance(scored[1], SyntheticDefectSet)
    assert scored[1].normals is scored[0]
    val = det.fit_info["validation"]
    assert val["kind"] == "synthetic-defects" and val["n_normal"] == val["n_anomalous"] == 4
    m = val["metrics"]
    assert m["n_images"] == 8 and m["n_anomalous"] == 4
    assert {"image_auroc", "pixel_auroc", "aupro", "fpr_at_threshold"} <= set(m)
    # the same figures as scoring the whole validation set from scratch
    vset = validation_set(scored[0], None, seed=0)
    monkeypatch.undo()
    expect = compute_metrics(vset, det.score(vset))
    for key in ("image_auroc", "pixel_auroc", "aupro", "tpr_at_threshold"):
        assert m[key] == pytest.approx(expect[key], abs=1e-6), key
    # saved with the model
    loaded = distilad.load_detector(det.save(tmp_path / "m.distilad"), device="cpu")
    assert loaded.fit_info["validation"]["metrics"]["image_auroc"] == m["image_auroc"]


def test_fit_validation_with_given_anomalies_or_none(tiny_mvtec: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import distilad
    from distilad.data import mvtec_test
    from distilad.errors import DataError

    params = dict(image_size=64, epochs=1, progress=False, device="cpu", holdout_fraction=0.25)
    det = distilad.create_detector("rd", **params)
    det.fit(tiny_mvtec, validation=None)
    assert "validation" not in det.fit_info
    # a labelled set: only its anomalous images count (3 defect types x 3 images)
    det.fit(tiny_mvtec, validation=mvtec_test(tiny_mvtec))
    val = det.fit_info["validation"]
    assert val["kind"] == "given-anomalies" and val["n_normal"] == 3 and val["n_anomalous"] == 9
    assert "pixel_auroc" in val["metrics"]  # their masks come along
    # an unlabelled array: every image is anomalous
    arr = (np.random.default_rng(0).random((5, 64, 64, 3)) * 255).astype(np.uint8)
    det.fit(tiny_mvtec, validation=arr)
    assert det.fit_info["validation"]["n_anomalous"] == 5
    # a wrong path fails before any training
    monkeypatch.setattr(det, "_fit", lambda *a: pytest.fail("trained despite a bad argument"))
    with pytest.raises(DataError, match="no such file"):
        det.fit(tiny_mvtec, validation=str(tiny_mvtec / "nowhere"))
    with pytest.raises(DataError, match="none is anomalous"):
        det.fit(tiny_mvtec, validation=ArrayImageSet(arr, labels=[0] * 5))


# --- novelty: validation anomalies from the training split ---------------------------------------
def test_novelty_validation_anomalies_come_from_training_split(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from distilad.data import novelty as nv

    labels = np.repeat(np.arange(10), 150)
    images = np.zeros((1500, 28, 28), np.uint8)
    images[:, 0, :2] = np.stack([np.arange(1500) // 256, np.arange(1500) % 256], 1)  # index
    reads = []

    def fake_split(dataset, split, root=None, download=False):
        reads.append(split)
        return images, labels

    monkeypatch.setattr(nv, "load_split", fake_split)
    a = nv.validation_anomalies("mnist", "one-class", 3, seed=0)
    idx = a.array[:, 0, 0, 0].astype(int) * 256 + a.array[:, 0, 1, 0]
    counts = np.bincount(labels[idx], minlength=10)
    assert counts[3] == 0 and set(counts[np.arange(10) != 3]) == {111}  # 999, balanced
    assert len(set(idx.tolist())) == 999 and a.labels.tolist() == [1] * 999
    assert a.names[0] == f"train/{idx[0]:05d}"
    b = nv.validation_anomalies("mnist", "one-class", 3, seed=0)
    c = nv.validation_anomalies("mnist", "one-class", 3, seed=1)
    assert np.array_equal(a.array, b.array) and not np.array_equal(a.array, c.array)
    d = nv.validation_anomalies("mnist", "one-class-anomalous", 3, seed=0, max_images=100)
    idx = d.array[:, 0, 0, 0].astype(int) * 256 + d.array[:, 0, 1, 0]
    assert len(d) == 100 and set(labels[idx]) == {3}
    split = nv.make_novelty_split("mnist", "one-class", 3, test=False)
    assert split.test is None and len(split.train) == 150
    assert set(reads) == {"train"}  # the test split was never read
    with pytest.raises(ValueError, match="max_images"):
        nv.validation_anomalies("mnist", "one-class", 3, seed=0, max_images=0)


def test_portable_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from distilad.bench.record import portable_command, portable_path

    data = tmp_path / "data"
    monkeypatch.setenv("DISTILAD_DATA", str(data))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cwd = tmp_path / "repo"
    assert portable_path(data / "mvtec_ad" / "bottle", cwd) == "$DISTILAD_DATA/mvtec_ad/bottle"
    assert portable_path(data, cwd) == "$DISTILAD_DATA"
    assert portable_path(cwd / "benchmarks" / "results", cwd) == "benchmarks/results"
    assert portable_path(tmp_path / "home" / ".cache", cwd) == "~/.cache"
    assert portable_path(tmp_path / "elsewhere", cwd) == "../elsewhere"
    # further away: no climb through the machine's folders, just the last two parts
    assert portable_path("/srv/a/b/shared/data", cwd) == ".../shared/data"
    assert portable_path("relative/x", cwd) == "relative/x"
    cmd = portable_command(["/opt/venv/bin/distilad", "bench", "--data-root", str(data),
                            f"--results={cwd}/r", "--set", f'weights="{data}/w.pt"',
                            "--set", "epochs=2"], cwd)
    assert cmd == ('distilad bench --data-root $DISTILAD_DATA --results=r '
                   '--set weights="$DISTILAD_DATA/w.pt" --set epochs=2')
