"""Tests of the data layer: image decoding, MVTec folders, plain folders, arrays, subsets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distilad.data import (
    ArrayImageSet,
    FileImageSet,
    as_image_set,
    image_files,
    image_folder,
    mvtec_test,
    mvtec_train,
    read_image,
)
from distilad.data.base import SubsetImageSet, to_float_image
from distilad.data.images import read_mask
from distilad.errors import DataError

# --- read_image ----------------------------------------------------------------------------------


def test_read_gray_8bit(tmp_path: Path) -> None:
    a = np.array([[0, 51], [128, 255]], dtype=np.uint8)
    Image.fromarray(a, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (2, 2, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], a / 255.0, atol=1e-7)
    assert out[1, 1, 0] == 1.0 and out[0, 1, 0] == pytest.approx(0.2)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_read_16bit(tmp_path: Path, suffix: str) -> None:
    a = np.array([[0, 32768, 65535], [1000, 255, 1]], dtype=np.uint16)
    path = tmp_path / f"g16{suffix}"
    Image.fromarray(a).save(path)
    out = read_image(path)
    assert out.shape == (2, 3, 1) and out.dtype == np.float32
    assert out[0, 0, 0] == 0.0
    assert out[0, 2, 0] == pytest.approx(1.0, abs=1e-7)
    assert out[0, 1, 0] == pytest.approx(0.5, abs=1e-4)
    # a 16-bit 255 is dark (255/65535), not white as if it were 8-bit
    assert out[1, 1, 0] == pytest.approx(255 / 65535, rel=1e-5)
    np.testing.assert_allclose(out[..., 0], a / 65535.0, rtol=1e-6, atol=1e-7)


def test_read_16bit_dark_image_not_rescaled_as_8bit(tmp_path: Path) -> None:
    a = np.full((4, 4), 200, dtype=np.uint16)  # every value <= 255
    Image.fromarray(a).save(tmp_path / "dark.png")
    out = read_image(tmp_path / "dark.png")
    np.testing.assert_allclose(out, 200 / 65535.0, rtol=1e-6)


def test_read_rgb_rgba_palette_la(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.shape == (5, 7, 3)
    np.testing.assert_allclose(out, rgb / 255.0, atol=1e-7)

    rgba = np.concatenate([rgb, np.full((5, 7, 1), 17, np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (5, 7, 3)  # alpha dropped
    np.testing.assert_allclose(out, rgb / 255.0, atol=1e-7)

    pal = Image.new("P", (3, 2))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 9))
    pal.putdata([0, 1, 2, 2, 1, 0])
    pal.save(tmp_path / "pal.png")
    out = read_image(tmp_path / "pal.png")
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0, 0], [1, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [0, 1, 0])
    np.testing.assert_array_equal(out[0, 2], [0, 0, 1])
    np.testing.assert_array_equal(out[1, 2], [1, 0, 0])

    la = np.stack([rgb[..., 0], rgb[..., 1]], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "la.png")
    assert out.shape == (5, 7, 1)
    np.testing.assert_allclose(out[..., 0], rgb[..., 0] / 255.0, atol=1e-7)


def test_read_jpeg_from_embedded_data(bottle_dir: Path) -> None:
    out = read_image(bottle_dir / "train" / "good" / "000.jpg")
    assert out.shape == (256, 256, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.05


def test_read_corrupt_truncated_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(DataError, match="bad.png"):
        read_image(bad)
    # a real PNG cut in half: the header decodes, the pixels do not
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(DataError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_read_mask_any_nonzero_is_true(tmp_path: Path) -> None:
    m = np.array([[0, 1], [255, 0]], dtype=np.uint8)
    Image.fromarray(m, mode="L").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), [[False, True], [True, False]])


# --- MVTec folders -------------------------------------------------------------------------------


def test_mvtec_counts_on_embedded_bottle(bottle_dir: Path) -> None:
    train = mvtec_train(bottle_dir)
    assert len(train) == 209
    assert (train.labels == 0).all() and not train.has_masks
    assert train.mask(0) is None
    assert train.names[0] == "good/000.jpg"

    test = mvtec_test(bottle_dir)
    assert len(test) == 83
    assert int((test.labels == 0).sum()) == 20 and int((test.labels == 1).sum()) == 63
    assert test.has_masks
    groups = {g: test.groups.count(g) for g in set(test.groups)}
    assert groups == {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}
    # every anomalous image has its mask file, every good one has none
    for lab, mp, name in zip(test.labels, test.mask_paths, test.names, strict=True):
        if lab == 1:
            assert mp is not None and mp.name == Path(name).stem + "_mask.png"
            assert mp.parent.name == name.split("/")[0]
        else:
            assert mp is None
    # labels follow the folder
    for lab, g in zip(test.labels, test.groups, strict=True):
        assert lab == (0 if g == "good" else 1)


def test_mvtec_masks_on_embedded_bottle(bottle_dir: Path) -> None:
    test = mvtec_test(bottle_dir)
    good = [i for i, g in enumerate(test.groups) if g == "good"]
    bad = [i for i, g in enumerate(test.groups) if g != "good"]
    m = test.mask(good[0])
    assert m.dtype == bool and m.shape == test.image(good[0]).shape[:2] and not m.any()
    for i in bad[::10]:
        m = test.mask(i)
        assert m.dtype == bool and m.shape == (256, 256)
        assert 0 < m.mean() < 0.5  # a defect region, not the whole image


def test_mvtec_tiny_copy(tiny_mvtec: Path) -> None:
    train, test = mvtec_train(tiny_mvtec), mvtec_test(tiny_mvtec)
    assert len(train) == 12 and len(test) == 12
    assert train.image(0).shape == (64, 64, 3)
    assert test.labels.tolist() == [1] * 9 + [0] * 3  # broken_large, broken_small, contamination, good
    assert test.mask(0).shape == (64, 64) and test.mask(0).any()
    assert not test.mask(11).any()


def test_mvtec_without_ground_truth_has_no_masks(tiny_mvtec: Path) -> None:
    shutil.rmtree(tiny_mvtec / "ground_truth")
    test = mvtec_test(tiny_mvtec)
    assert not test.has_masks and test.mask(0) is None
    assert int(test.labels.sum()) == 9


def test_mvtec_missing_and_empty(tmp_path: Path, tiny_mvtec: Path) -> None:
    with pytest.raises(DataError, match="test"):
        mvtec_test(tmp_path)
    for p in (tiny_mvtec / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=str(tiny_mvtec / "train" / "good")):
        mvtec_train(tiny_mvtec)


def test_as_image_set_picks_split_of_mvtec_category(tiny_mvtec: Path) -> None:
    assert len(as_image_set(tiny_mvtec, split="train")) == 12
    test = as_image_set(str(tiny_mvtec), split="test")
    assert len(test) == 12 and test.labels is not None


# --- plain folders -------------------------------------------------------------------------------


def _write_png(path: Path, value: int, size: tuple[int, int] = (6, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8), mode="L").save(path)


def test_image_folder_nested(tmp_path: Path) -> None:
    _write_png(tmp_path / "b.png", 10)
    _write_png(tmp_path / "a" / "z.png", 20)
    _write_png(tmp_path / "a" / "deeper" / "y.PNG", 30, (3, 5))
    (tmp_path / "notes.txt").write_text("not an image")
    _write_png(tmp_path / ".hidden.png", 40)
    s = image_folder(tmp_path)
    assert isinstance(s, FileImageSet)
    assert s.names == ["a/deeper/y.PNG", "a/z.png", "b.png"]
    assert s.labels is None and not s.has_masks
    assert s.image(0).shape == (5, 3, 1)
    assert s.image(1)[0, 0, 0] == pytest.approx(20 / 255)
    flat = image_folder(tmp_path, recursive=False)
    assert flat.names == ["b.png"]
    # as_image_set on a plain (non-MVTec) folder gives the same
    assert as_image_set(tmp_path).names == s.names


def test_image_files_mixes_files_and_folders(tmp_path: Path) -> None:
    _write_png(tmp_path / "d" / "1.png", 1)
    _write_png(tmp_path / "d" / "2.png", 2)
    _write_png(tmp_path / "single.png", 3)
    s = image_files([tmp_path / "single.png", tmp_path / "d"])
    assert s.names == ["single.png", "1.png", "2.png"] and len(s) == 3
    assert as_image_set([str(tmp_path / "single.png")]).names == ["single.png"]
    assert len(as_image_set(tmp_path / "single.png")) == 1
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match="x.txt"):
        image_files([tmp_path / "x.txt"])
    with pytest.raises(DataError, match="nope"):
        image_files([tmp_path / "nope"])


def test_missing_and_empty_folders_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    with pytest.raises(DataError, match=str(missing)):
        as_image_set(missing)
    with pytest.raises(DataError, match=str(missing)):
        image_folder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=str(empty)):
        as_image_set(empty)
    with pytest.raises(DataError, match=str(empty)):
        image_folder(empty)
    with pytest.raises(DataError):
        as_image_set(12345)


# --- arrays --------------------------------------------------------------------------------------


def test_arrays_nhw_uint8() -> None:
    a = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    s = as_image_set(a)
    assert isinstance(s, ArrayImageSet) and len(s) == 2
    img = s.image(1)
    assert img.shape == (3, 5, 1) and img.dtype == np.float32
    np.testing.assert_allclose(img[..., 0], a[1] / 255.0)
    assert s.names == ["0", "1"] and s.labels is None


def test_arrays_nhwc_and_nchw_agree() -> None:
    rng = np.random.default_rng(1)
    nhwc = rng.random((3, 5, 7, 3), dtype=np.float32)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    a, b = as_image_set(nhwc), as_image_set(nchw)
    for i in range(3):
        assert a.image(i).shape == (5, 7, 3)
        np.testing.assert_array_equal(a.image(i), nhwc[i])
        np.testing.assert_array_equal(b.image(i), nhwc[i])
    # single-channel NCHW
    g = rng.random((2, 1, 5, 6), dtype=np.float32)
    assert as_image_set(g).image(0).shape == (5, 6, 1)
    # RGBA arrays lose alpha
    rgba = rng.random((1, 5, 6, 4), dtype=np.float32)
    np.testing.assert_array_equal(as_image_set(rgba).image(0), rgba[0, ..., :3])


def test_arrays_torch_tensor_uint16_and_lists() -> None:
    t = torch.rand(2, 3, 8, 9)
    s = as_image_set(t)
    assert s.image(1).shape == (8, 9, 3)
    np.testing.assert_allclose(s.image(1), t[1].permute(1, 2, 0).numpy())
    u = np.array([[[0, 32768], [65535, 1]]], dtype=np.uint16)
    img = as_image_set(u).image(0)[..., 0]
    np.testing.assert_allclose(img, [[0.0, 32768 / 65535], [1.0, 1 / 65535]], rtol=1e-6)
    # floats out of [0, 1] are refused (tests/test_api_inputs.py); rounding noise is clipped
    f = as_image_set(np.array([[[-1e-5, 1 + 1e-5]]])).image(0)
    np.testing.assert_array_equal(f[..., 0], [[0.0, 1.0]])
    # a list of same-size arrays stacks; different sizes stay a list
    same = as_image_set([np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8)])
    assert len(same) == 2 and same.image(1).max() == 1.0
    ragged = as_image_set([np.zeros((4, 4, 3), np.uint8), np.zeros((6, 5, 3), np.uint8)])
    assert len(ragged) == 2 and ragged.image(1).shape == (6, 5, 3)


def test_array_bad_shapes_and_labels() -> None:
    with pytest.raises(ValueError):
        ArrayImageSet(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        ArrayImageSet(np.zeros((2, 5, 5, 2)))
    with pytest.raises(ValueError):
        ArrayImageSet(np.zeros((2, 4, 4)), labels=[0, 1, 0])


def test_to_float_image_dtypes() -> None:
    assert to_float_image(np.array([[True, False]])).tolist() == [[[1.0], [0.0]]]
    u8 = to_float_image(np.array([[255, 0]], dtype=np.uint8))
    assert u8[0, :, 0].tolist() == [1.0, 0.0]


# --- subsets -------------------------------------------------------------------------------------


def test_subset_labels_masks_names_follow(bottle_dir: Path) -> None:
    test = mvtec_test(bottle_dir)
    idx = [82, 0, 70, 25]
    sub = test.subset(idx)
    assert isinstance(sub, SubsetImageSet) and len(sub) == 4
    assert sub.labels.tolist() == [int(test.labels[i]) for i in idx]
    assert sub.labels.tolist() == [0, 1, 0, 1]
    assert sub.names == [test.names[i] for i in idx]
    assert sub.has_masks
    np.testing.assert_array_equal(sub.mask(1), test.mask(0))
    assert not sub.mask(0).any() and sub.mask(1).any()
    np.testing.assert_array_equal(sub.image(3), test.image(25))
    # a subset of a subset
    sub2 = sub.subset([3, 1])
    assert sub2.names == [test.names[25], test.names[0]] and sub2.labels.tolist() == [1, 1]


def test_subset_of_arrays_and_fingerprints() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    masks = rng.random((5, 6, 6)) > 0.5
    s = ArrayImageSet(imgs, labels=[0, 1, 0, 1, 1], masks=masks, names=list("abcde"))
    sub = s.subset([4, 2])
    assert sub.labels.tolist() == [1, 0] and sub.names == ["e", "c"]
    np.testing.assert_array_equal(sub.mask(0), masks[4])
    # content fingerprints: pixels only (not labels), and differ between subsets
    relabelled = ArrayImageSet(imgs, labels=[1, 1, 1, 1, 1])
    assert relabelled.content_fingerprint == s.content_fingerprint
    assert relabelled.fingerprint != s.fingerprint
    assert s.subset([0, 1]).content_fingerprint != s.subset([1, 0]).content_fingerprint
    assert s.subset([0, 1]).content_fingerprint == s.subset([0, 1]).content_fingerprint
    other = ArrayImageSet(imgs[::-1].copy())
    assert other.content_fingerprint != s.content_fingerprint
