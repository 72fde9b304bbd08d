"""Tests of the one-class novelty benchmarks (:mod:`distilad.data.novelty`).

Tests on tiny synthetic files run everywhere; tests on the real MNIST / Fashion-MNIST / CIFAR-10
files use ``$DISTILAD_DATA`` (or ``../shared/data`` next to the checkout) and are
skipped, with the reason, when that folder is absent.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import find_shared_data
from PIL import Image

from distilad.data import novelty as nv
from distilad.data.base import ArrayImageSet

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


REAL_DATA, REAL_DATA_MISSING = find_shared_data()


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session decodes into its own cache dir and starts with an empty memo."""
    cache = tmp_path_factory.mktemp("distilad-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(nv.CACHE_ENV, str(cache))
        nv.clear_cache()
        yield cache
        nv.clear_cache()


def real_root(*needed: str) -> Path:
    """The real data root, or skip the test when it (or a needed sub-folder) is absent."""
    if REAL_DATA is None:
        pytest.skip(f"real data (MNIST/raw/, FashionMNIST/raw/, cifar10-jpeg/): {REAL_DATA_MISSING}")
    for sub in needed:
        if not (REAL_DATA / sub).exists():
            pytest.skip(f"real data: {REAL_DATA / sub} is absent")
    return REAL_DATA


# ------------------------------------------------------------------------------------------------
# synthetic data writers
# ------------------------------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_fake_idx(root: Path, folder: str, compress: bool, seed: int = 0) -> dict[str, tuple]:
    """Tiny train / test idx files under ``root/folder/raw``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, prefix, n in (("train", "train", 40), ("test", "t10k", 30)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, compress)
        out[split] = (x, y)
    return out


# ------------------------------------------------------------------------------------------------
# roots, arguments, errors
# ------------------------------------------------------------------------------------------------


def test_data_root_explicit_beats_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(nv.DATA_ENV, str(tmp_path / "env"))
    assert nv.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert nv.data_root(None) == tmp_path / "env"


def test_missing_root_error_names_option_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(nv.DATA_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as info:
        nv.data_root(None)
    msg = str(info.value)
    assert "--data-root" in msg and nv.DATA_ENV in msg and "MNIST/raw" in msg
    assert "\n" not in msg
    with pytest.raises(FileNotFoundError, match="--data-root"):
        nv.load_split("mnist", "train")


def test_missing_files_name_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        nv.load_split("fashion-mnist", "test", tmp_path)
    expected = tmp_path.resolve() / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    assert str(expected) in str(info.value)
    with pytest.raises(FileNotFoundError, match="cifar10-jpeg"):
        nv.load_split("cifar10", "train", tmp_path)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset"):
        nv.load_split("svhn", "train", tmp_path)
    with pytest.raises(ValueError, match="split"):
        nv.load_split("mnist", "val", tmp_path)
    with pytest.raises(ValueError, match="protocol"):
        nv.make_novelty_split("mnist", "multi-class", 0, tmp_path)
    with pytest.raises(ValueError, match="class"):
        nv.make_novelty_split("mnist", "one-class", 10, tmp_path)


def test_constants() -> None:
    assert nv.DATASETS == ("mnist", "fashion-mnist", "cifar10")
    assert nv.PROTOCOLS == ("one-class", "one-class-anomalous")
    for ds in nv.DATASETS:
        assert len(nv.CLASS_NAMES[ds]) == 10
    assert nv.CLASS_NAMES["cifar10"][3] == "cat"
    assert nv.CLASS_NAMES["fashion-mnist"][9] == "Ankle boot"


# ------------------------------------------------------------------------------------------------
# synthetic files: parsing, protocols, CIFAR layouts, cache
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "extracted"])
def test_idx_parsing(tmp_path: Path, compress: bool) -> None:
    written = make_fake_idx(tmp_path, "MNIST", compress)
    for split, (x, y) in written.items():
        images, labels = nv.load_split("mnist", split, tmp_path)
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        np.testing.assert_array_equal(images, x)
        np.testing.assert_array_equal(labels, y)
        assert not images.flags.writeable and not labels.flags.writeable


def test_idx_rejects_truncated_file(tmp_path: Path) -> None:
    p = tmp_path / "x-idx3-ubyte"
    write_idx(p, np.zeros((3, 28, 28), np.uint8), compress=False)
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(ValueError, match="header says"):
        nv.read_idx(p)


def test_protocols_on_synthetic_data(tmp_path: Path) -> None:
    make_fake_idx(tmp_path, "FashionMNIST", compress=True)
    _, train_y = nv.load_split("fashion-mnist", "train", tmp_path)
    _, test_y = nv.load_split("fashion-mnist", "test", tmp_path)

    oc = nv.make_novelty_split("fashion-mnist", "one-class", 2, tmp_path)
    assert len(oc.train) == int((train_y == 2).sum())
    assert (oc.train.labels == 0).all() and (oc.train_classes == 2).all()
    assert len(oc.test) == len(test_y)
    np.testing.assert_array_equal(oc.test.labels, (test_y != 2).astype(np.int64))
    np.testing.assert_array_equal(oc.test_classes, test_y)
    assert oc.normal_classes == (2,) and 2 not in oc.anomalous_classes

    oa = nv.make_novelty_split("fashion-mnist", "one-class-anomalous", 2, tmp_path)
    assert len(oa.train) == int((train_y != 2).sum())
    assert (oa.train.labels == 0).all() and (oa.train_classes != 2).all()
    np.testing.assert_array_equal(oa.test.labels, (test_y == 2).astype(np.int64))
    assert oa.anomalous_classes == (2,) and len(oa.normal_classes) == 9


def test_multimodal_training_sets_are_rows_of_one_split(tmp_path: Path) -> None:
    """one-class-anomalous: the training set is rows of the whole training split (one set per
    process), so every class's run reads the same teacher-feature cache entry; its images,
    names and labels are those of the rows; one-class keeps a set of its own."""
    from distilad.backbones.cache import root_and_rows

    make_fake_idx(tmp_path, "FashionMNIST", compress=False)
    images, train_y = nv.load_split("fashion-mnist", "train", tmp_path)
    a2 = nv.make_novelty_split("fashion-mnist", "one-class-anomalous", 2, tmp_path)
    a5 = nv.make_novelty_split("fashion-mnist", "one-class-anomalous", 5, tmp_path)
    root2, rows2 = root_and_rows(a2.train)
    root5, rows5 = root_and_rows(a5.train)
    assert root2 is root5 and len(root2) == len(train_y)
    np.testing.assert_array_equal(rows2.numpy(), np.flatnonzero(train_y != 2))
    np.testing.assert_array_equal(rows5.numpy(), np.flatnonzero(train_y != 5))
    k = int(rows2[3])
    np.testing.assert_array_equal(a2.train.image(3)[..., 0], (images[k] / np.float32(255)))
    assert a2.train.names[3] == f"train/{k:05d}" and (a2.train.labels == 0).all()
    assert a2.train.description == "fashion-mnist/train/one-class-anomalous/2"
    assert a2.train.fingerprint != a5.train.fingerprint
    # a held-out split of it is a chain of subsets with the same root
    from distilad.data.base import SubsetImageSet

    part = SubsetImageSet(a2.train, [0, 5, 7])
    root, rows = root_and_rows(part)
    assert root is root2 and rows.tolist() == [int(rows2[i]) for i in (0, 5, 7)]
    one = nv.make_novelty_split("fashion-mnist", "one-class", 2, tmp_path)
    assert root_and_rows(one.train)[0] is one.train


def _write_cifar_pickles(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    out: dict[str, list] = {"train": [[], []], "test": [[], []]}
    names = [(f"data_batch_{i}", "train") for i in range(1, 6)] + [("test_batch", "test")]
    for name, split in names:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=4).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
        out[split][0].append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        out[split][1].append(np.asarray(labels))
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in out.items()}


def _write_jpeg_tree(root: Path, per_class: int, fmt: str = "png") -> np.ndarray:
    """A tiny ``cifar10-jpeg/test`` tree (PNG so pixels round-trip); returns the images in order."""
    rng = np.random.default_rng(2)
    images = []
    for name in nv.CLASS_NAMES["cifar10"]:
        d = root / "cifar10-jpeg" / "test" / name
        d.mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(a).save(d / f"{i:04d}.{fmt}")
            images.append(a)
    return np.stack(images)


def test_cifar_pickles_preferred_over_jpeg_tree(tmp_path: Path) -> None:
    written = _write_cifar_pickles(tmp_path)
    _write_jpeg_tree(tmp_path, per_class=1)
    for split, (x, y) in written.items():
        images, labels = nv.load_split("cifar10", split, tmp_path)
        assert images.shape == (len(x), 32, 32, 3)
        np.testing.assert_array_equal(images, x)
        np.testing.assert_array_equal(labels, y)


def test_cifar_jpeg_tree_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(nv.CACHE_ENV, str(cache))
    expected = _write_jpeg_tree(tmp_path / "data", per_class=2)
    images, labels = nv.load_split("cifar10", "test", tmp_path / "data")
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 2))
    cached = sorted(p.name for p in cache.iterdir())
    assert len(cached) == 2 and all(n.endswith(".npy") for n in cached)
    assert not any(n.endswith(".tmp") for n in cached)

    # a fresh process (memo cleared) reads the cache instead of decoding
    nv.clear_cache()

    def fail(files: object) -> np.ndarray:
        raise AssertionError("decoded although the cache was valid")

    monkeypatch.setattr(nv, "_decode_jpegs", fail)
    again, _ = nv.load_split("cifar10", "test", tmp_path / "data")
    np.testing.assert_array_equal(again, expected)

    # a changed tree (no SHA256SUMS: key = file count + total size) gets a new key
    monkeypatch.undo()
    monkeypatch.setenv(nv.CACHE_ENV, str(cache))
    nv.clear_cache()
    extra = np.full((32, 32, 3), 7, np.uint8)
    Image.fromarray(extra).save(tmp_path / "data" / "cifar10-jpeg" / "test" / "truck" / "9999.png")
    bigger, labels = nv.load_split("cifar10", "test", tmp_path / "data")
    assert len(bigger) == 21 and labels[-1] == 9
    np.testing.assert_array_equal(bigger[-1], extra)
    assert len(list(cache.iterdir())) == 4


# ------------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------------


def test_mnist_real() -> None:
    root = real_root("MNIST")
    x, y = nv.load_split("mnist", "train", root)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    xt, yt = nv.load_split("mnist", "test", root)
    assert xt.shape == (10000, 28, 28)
    assert np.bincount(yt, minlength=10).tolist() == MNIST_TEST_COUNTS
    # memoised: the same arrays come back
    assert nv.load_split("mnist", "train", root)[0] is x


def test_fashion_mnist_real() -> None:
    root = real_root("FashionMNIST")
    x, y = nv.load_split("fashion-mnist", "train", root)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [6000] * 10
    xt, yt = nv.load_split("fashion-mnist", "test", root)
    assert xt.shape == (10000, 28, 28)
    assert np.bincount(yt, minlength=10).tolist() == [1000] * 10


def test_mnist_one_class_split_real() -> None:
    root = real_root("MNIST")
    s = nv.make_novelty_split("mnist", "one-class", 0, root)
    assert isinstance(s.train, ArrayImageSet) and isinstance(s.test, ArrayImageSet)
    assert len(s.train) == 5923 and (s.train.labels == 0).all()
    assert len(s.test) == 10000 and int(s.test.labels.sum()) == 10000 - 980
    assert s.test.labels[s.test_classes == 0].sum() == 0
    assert s.normal_class == 0 and s.dataset == "mnist" and s.protocol == "one-class"
    assert s.train.description == "mnist/train/one-class/0"
    assert s.test.description == "mnist/test/one-class/0"
    assert s.train.image(0).shape == (28, 28, 1) and s.train.image(0).dtype == np.float32
    assert "5923" in s.description

    # every class: sizes add up; each class gives its own fingerprints
    fingerprints = set()
    for c in range(10):
        sc = nv.make_novelty_split("mnist", "one-class", c, root)
        assert len(sc.train) == MNIST_TRAIN_COUNTS[c]
        assert int((sc.test.labels == 0).sum()) == MNIST_TEST_COUNTS[c]
        fingerprints.add(sc.train.fingerprint)
        fingerprints.add(sc.test.fingerprint)
    assert len(fingerprints) == 20


def test_mnist_anomalous_protocol_real() -> None:
    root = real_root("MNIST")
    s = nv.make_novelty_split("mnist", "one-class-anomalous", 3, root)
    assert len(s.train) == 60000 - 6131 and (s.train.labels == 0).all()
    assert (s.train_classes != 3).all()
    assert len(s.test) == 10000 and int(s.test.labels.sum()) == 1010
    np.testing.assert_array_equal(s.test.labels, (s.test_classes == 3).astype(np.int64))
    assert s.anomalous_classes == (3,)
    assert s.test.description == "mnist/test/one-class-anomalous/3"
    other = nv.make_novelty_split("mnist", "one-class", 3, root)
    assert other.test.fingerprint != s.test.fingerprint


def test_fashion_mnist_one_class_split_real() -> None:
    root = real_root("FashionMNIST")
    s = nv.make_novelty_split("fashion-mnist", "one-class", 9, root)
    assert len(s.train) == 6000 and int(s.test.labels.sum()) == 9000


def test_cifar10_jpeg_test_split_real(_isolated_cache: Path) -> None:
    root = real_root("cifar10-jpeg")
    if (root / "cifar-10-batches-py").exists():
        pytest.skip("the pickled CIFAR-10 release is present and takes precedence")
    x, y = nv.load_split("cifar10", "test", root)
    assert x.shape == (10000, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).tolist() == [1000] * 10
    # order: class folders alphabetically (= official label order), then file name
    with Image.open(root / "cifar10-jpeg" / "test" / "cat" / "0005.jpg") as im:
        np.testing.assert_array_equal(x[3 * 1000 + 5], np.asarray(im.convert("RGB")))
    assert any(p.name.startswith("cifar10-jpeg-test-") for p in _isolated_cache.iterdir())
    # reload from the .npy cache
    nv.clear_cache()
    x2, y2 = nv.load_split("cifar10", "test", root)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


def test_cifar10_one_class_split_real() -> None:
    """Decodes the 50,000 training JPEGs on the first (uncached) load: ~7 s on one core."""
    root = real_root("cifar10-jpeg")
    s = nv.make_novelty_split("cifar10", "one-class", 3, root)
    assert len(s.train) == 5000 and s.train.image(0).shape == (32, 32, 3)
    assert len(s.test) == 10000 and int(s.test.labels.sum()) == 9000
    assert s.train.description == "cifar10/train/one-class/3"
    a = nv.make_novelty_split("cifar10", "one-class-anomalous", 3, root)
    assert len(a.train) == 45000 and int(a.test.labels.sum()) == 1000
