"""One-class novelty-detection benchmarks on MNIST, Fashion-MNIST and CIFAR-10.

Two protocols, both defined by one class index ``cls`` in ``0..9``:

* ``one-class``: the training set holds only the training images of class ``cls`` (normal);
  the test set is the whole test split, label 0 for class ``cls`` and 1 for every other class.
* ``one-class-anomalous`` (leave-one-class-out): the training set holds the training images of
  every class except ``cls``; the test set is the whole test split, label 1 for class ``cls`` and
  0 for the others.

Test images are used for testing only; any validation / calibration hold-out is taken from the
training set by the detector. The validation anomalies come from the training split too
(:func:`validation_anomalies`), never from the test split:

* ``one-class``, class ``c``: a seeded sample of the *other* classes' training images, balanced
  over the nine classes: ``max_images // 9`` of each (999 by default).
* ``one-class-anomalous``, class ``c``: a seeded sample of class ``c``'s training images (which
  that protocol never trains on), up to ``max_images`` (1000 by default).

So a benchmark can choose its settings on validation figures (held-out normals of the training
split vs these images) and read the test split once, for the final evaluation.

Where the data is looked for (``root`` = ``--data-root`` / ``$DISTILAD_DATA``), in the layouts
torchvision uses:

* MNIST: ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
* Fashion-MNIST: ``<root>/FashionMNIST/raw/`` with the same file names
* CIFAR-10: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (the official python
  release, lossless) when present, else the JPEG tree
  ``<root>/cifar10-jpeg/{train,test}/<class>/*.jpg`` (class folders named as in
  :data:`CLASS_NAMES`).

The idx files are parsed directly with :mod:`gzip` and numpy (already-extracted files work too).
The official CIFAR-10 python release is a set of pickles; :mod:`pickle` is used for that layout
only, because it is the dataset's own distribution format - unpickling can run code, so only point
``root`` at a copy you trust. The JPEG tree is decoded with PIL once and cached as ``.npy`` files
under ``$DISTILAD_CACHE`` (default ``~/.cache/distilad``), keyed by the tree's ``SHA256SUMS``
file (or, without one, by file count and total size).

Loaded splits are memoised per process, so a 10-class sweep reads each file once.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distilad.atomic import atomic_path
from distilad.errors import DataError

from .base import ArrayImageSet, SubsetImageSet

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10")
PROTOCOLS: tuple[str, ...] = ("one-class", "one-class-anomalous")
SPLITS: tuple[str, ...] = ("train", "test")

#: Class names in label order 0..9, per dataset.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
}

DATA_ENV = "DISTILAD_DATA"
CACHE_ENV = "DISTILAD_CACHE"

#: Folder under the data root per idx dataset (torchvision's class names).
_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_CIFAR_PICKLE_DIR = "cifar-10-batches-py"
_CIFAR_PICKLE_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_CIFAR_JPEG_DIR = "cifar10-jpeg"
_IMAGE_SHAPES = {"mnist": (28, 28), "fashion-mnist": (28, 28), "cifar10": (32, 32, 3)}
#: bump when the cached array format changes
_CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------------
# locations
# ------------------------------------------------------------------------------------------------


def data_root(root: str | Path | None = None) -> Path:
    """The data root: ``root`` when given, else ``$DISTILAD_DATA``.

    Raises:
        FileNotFoundError: neither is set.
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    raise FileNotFoundError(
        f"no data root: pass --data-root DIR or set {DATA_ENV}=DIR, where DIR holds MNIST/raw/, "
        f"FashionMNIST/raw/ (idx .gz files) and cifar10-jpeg/ or {_CIFAR_PICKLE_DIR}/"
    )


def cache_dir() -> Path:
    """Where decoded arrays are cached: ``$DISTILAD_CACHE``, default ``~/.cache/distilad``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "distilad"


def _check(dataset: str, split: str) -> None:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")


# ------------------------------------------------------------------------------------------------
# idx files (MNIST, Fashion-MNIST)
# ------------------------------------------------------------------------------------------------


def _idx_path(raw: Path, stem: str) -> Path | None:
    """The extracted idx file ``raw/stem`` if present, else ``raw/stem.gz``, else None."""
    for p in (raw / stem, raw / f"{stem}.gz"):
        if p.is_file():
            return p
    return None


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an idx file of unsigned bytes (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an idx file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(f"{path}: idx type 0x{data[2]:02x} is not unsigned byte (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) != header + int(np.prod(dims)):
        raise DataError(f"{path}: {len(data) - header} data bytes, header says shape {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _idx_files(root: Path, dataset: str, split: str) -> tuple[Path | None, Path | None, Path]:
    raw = root / _IDX_FOLDERS[dataset] / "raw"
    prefix = _IDX_PREFIX[split]
    images = _idx_path(raw, f"{prefix}-images-idx3-ubyte")
    labels = _idx_path(raw, f"{prefix}-labels-idx1-ubyte")
    return images, labels, raw


def _load_idx(root: Path, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path, raw = _idx_files(root, dataset, split)
    prefix = _IDX_PREFIX[split]
    for p, stem in ((images_path, "images-idx3"), (labels_path, "labels-idx1")):
        if p is None:
            raise FileNotFoundError(
                f"{dataset} {split}: expected {raw / f'{prefix}-{stem}-ubyte.gz'} (or the "
                f"extracted file without .gz); pass download=True to fetch it with torchvision"
            )
    assert images_path is not None and labels_path is not None
    images = read_idx(images_path)
    labels = read_idx(labels_path).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{dataset} {split}: images {images.shape} vs labels {labels.shape}")
    return images, labels


# ------------------------------------------------------------------------------------------------
# CIFAR-10
# ------------------------------------------------------------------------------------------------


def _cifar_pickle_present(root: Path, split: str) -> bool:
    d = root / _CIFAR_PICKLE_DIR
    return all((d / name).is_file() for name in _CIFAR_PICKLE_FILES[split])


def _load_cifar_pickles(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the official ``cifar-10-batches-py`` release (python pickles, its native format)."""
    images, labels = [], []
    for name in _CIFAR_PICKLE_FILES[split]:
        with open(root / _CIFAR_PICKLE_DIR / name, "rb") as f:
            # The official CIFAR-10 python release is pickled dicts; this is the only pickle use.
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def _jpeg_files(split_dir: Path) -> tuple[list[Path], np.ndarray]:
    """JPEG paths of ``split_dir/<class>/`` sorted by class then name, with their class labels."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(CLASS_NAMES["cifar10"]):
        d = split_dir / name
        if not d.is_dir():
            raise FileNotFoundError(f"cifar10: expected the class folder {d}")
        names = sorted(
            e.name
            for e in os.scandir(d)
            if e.is_file() and e.name.lower().endswith((".jpg", ".jpeg", ".png"))
        )
        files.extend(d / n for n in names)
        labels.extend([label] * len(names))
    return files, np.asarray(labels, dtype=np.int64)


def _jpeg_tree_key(tree: Path, split: str, files: Sequence[Path]) -> str:
    """Cache key of the JPEG tree: hash of its SHA256SUMS file, else file count + total size."""
    sums = tree / "SHA256SUMS"
    h = hashlib.sha256(f"v{_CACHE_VERSION}:{split}:".encode())
    if sums.is_file():
        h.update(b"sha256sums:" + sums.read_bytes())
    else:
        total = sum(p.stat().st_size for p in files)
        h.update(f"count:{len(files)}:size:{total}".encode())
    return h.hexdigest()[:16]


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    """``np.save`` of ``arr`` to ``path``, whole or not at all."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _decode_jpegs(files: Sequence[Path]) -> np.ndarray:
    """Decode 32x32 JPEGs into one (N, 32, 32, 3) uint8 array.

    A plain loop: ~6 s for the 50,000 training images on one core; thread and process pools
    measured no faster on these tiny files.
    """
    from PIL import Image

    out = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for i, p in enumerate(files):
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB"))
        if a.shape != (32, 32, 3):
            raise DataError(f"{p}: expected a 32x32 image, got {a.shape}")
        out[i] = a
    return out


def _load_cifar_jpeg(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    tree = root / _CIFAR_JPEG_DIR
    split_dir = tree / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"cifar10 {split}: expected {root / _CIFAR_PICKLE_DIR}/ (official python release) or "
            f"the JPEG tree {split_dir}/<class>/*.jpg; pass download=True to fetch the official "
            f"release with torchvision"
        )
    files, labels = _jpeg_files(split_dir)
    key = _jpeg_tree_key(tree, split, files)
    cdir = cache_dir()
    img_cache = cdir / f"cifar10-jpeg-{split}-{key}-images.npy"
    lab_cache = cdir / f"cifar10-jpeg-{split}-{key}-labels.npy"
    if img_cache.is_file() and lab_cache.is_file():
        try:
            images = np.load(img_cache, allow_pickle=False)
            cached_labels = np.load(lab_cache, allow_pickle=False)
            if images.shape == (len(files), 32, 32, 3) and np.array_equal(cached_labels, labels):
                return images, labels
        except (OSError, ValueError) as e:
            warnings.warn(f"ignoring unreadable cache {img_cache}: {e}", stacklevel=3)
    images = _decode_jpegs(files)
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        _atomic_save(lab_cache, labels)
        _atomic_save(img_cache, images)
    except OSError as e:
        warnings.warn(f"could not write the decode cache under {cdir}: {e}", stacklevel=3)
    return images, labels


# ------------------------------------------------------------------------------------------------
# public loading API
# ------------------------------------------------------------------------------------------------


def _present(root: Path, dataset: str, split: str) -> bool:
    if dataset == "cifar10":
        return _cifar_pickle_present(root, split) or (root / _CIFAR_JPEG_DIR / split).is_dir()
    images, labels, _ = _idx_files(root, dataset, split)
    return images is not None and labels is not None


def _download(root: Path, dataset: str, split: str) -> None:
    """Fetch a dataset with torchvision into ``root`` (its standard layout)."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[dataset]
    root.mkdir(parents=True, exist_ok=True)
    cls(root=str(root), train=split == "train", download=True)


@functools.lru_cache(maxsize=8)
def _load_cached(dataset: str, split: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    r = Path(root)
    if dataset == "cifar10":
        if _cifar_pickle_present(r, split):
            images, labels = _load_cifar_pickles(r, split)
        else:
            images, labels = _load_cifar_jpeg(r, split)
    else:
        images, labels = _load_idx(r, dataset, split)
    if images.shape[1:] != _IMAGE_SHAPES[dataset]:
        raise DataError(
            f"{dataset} {split}: expected images (N, {_IMAGE_SHAPES[dataset]}), got {images.shape}"
        )
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{dataset} {split}: labels outside 0..9")
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    # shared between callers through the memo: make them read-only
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_split(
    dataset: str, split: str, root: str | Path | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Images and class labels of one split, memoised per process.

    Args:
        dataset: one of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        root: the data root (see :func:`data_root`).
        download: when the files are missing, fetch them with torchvision into ``root``
            (needs network access); by default a missing file raises instead.

    Returns:
        ``(images, labels)``: read-only uint8 images of shape (N, 28, 28) for (Fashion-)MNIST or
        (N, 32, 32, 3) for CIFAR-10, and int64 class labels in ``0..9``.

    Raises:
        FileNotFoundError: the files are missing (the message names the expected path).
    """
    _check(dataset, split)
    r = data_root(root).resolve()
    if download and not _present(r, dataset, split):
        _download(r, dataset, split)
    return _load_cached(dataset, split, str(r))


def clear_cache() -> None:
    """Forget the splits memoised by :func:`load_split` (the on-disk cache stays)."""
    _load_cached.cache_clear()
    _whole_split.cache_clear()


# ------------------------------------------------------------------------------------------------
# novelty splits
# ------------------------------------------------------------------------------------------------


class NoveltyImageSet(ArrayImageSet):
    """An :class:`ArrayImageSet` whose fingerprint names the split and is computed once.

    ``images``: (N, H, W) gray or (N, H, W, C) uint8 (channels last, whatever N is).
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, names: Sequence[str], description: str
    ):
        if images.ndim == 3:  # gray: say so, a set of 3 gray images is not one RGB image
            images = images[..., None]
        super().__init__(images, labels=labels, names=names, description=description)
        self.array.flags.writeable = False
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = f"novelty:{self.description}:{super().fingerprint}"
        return self._fingerprint


class NoveltySubset(SubsetImageSet):
    """Rows ``indices`` of a whole split (:func:`whole_split`) with their own labels and
    description. The multimodal training set is one: nine tenths of the training split, whose
    teacher features are then served by the split's cache entry (one entry for all ten classes,
    computed once) instead of an entry per class of nearly the same size."""

    def __init__(self, parent: NoveltyImageSet, indices: np.ndarray, labels: np.ndarray,
                 description: str):
        super().__init__(parent, [int(i) for i in indices])
        self.labels = np.asarray(labels, dtype=np.int64)
        self.description = description

    @property
    def fingerprint(self) -> str:
        labels = hashlib.sha1(self.labels.tobytes()).hexdigest()[:12]
        return f"novelty:{self.description}:{super().fingerprint}:{labels}"


@functools.lru_cache(maxsize=8)
def _whole_split(dataset: str, split: str, root: str) -> NoveltyImageSet:
    images, labels = _load_cached(dataset, split, root)
    return NoveltyImageSet(images, labels=labels,
                           names=[f"{split}/{i:05d}" for i in range(len(images))],
                           description=f"{dataset}/{split}")


def whole_split(dataset: str, split: str, root: str | Path | None = None) -> NoveltyImageSet:
    """All images of one split with their class labels, as one set (memoised per process, so
    its content fingerprint is hashed once)."""
    _check(dataset, split)
    return _whole_split(dataset, split, str(data_root(root).resolve()))


@dataclass
class NoveltySplit:
    """A one-class novelty benchmark: normal-only training images and a labelled test set."""

    #: normal training images only (labels all 0); under ``one-class-anomalous`` a
    #: :class:`NoveltySubset` of the whole training split
    train: ArrayImageSet | NoveltySubset
    #: the whole test split, labels 0 normal / 1 anomalous (None when not read)
    test: ArrayImageSet | None
    dataset: str
    protocol: str
    #: the class the protocol is defined by (``cls``): the single normal class under
    #: ``one-class``, the single anomalous class under ``one-class-anomalous``
    normal_class: int
    #: original class index (0..9) of every test image, aligned with ``test``
    test_classes: np.ndarray = field(repr=False)
    #: original class index (0..9) of every training image, aligned with ``train``
    train_classes: np.ndarray = field(repr=False)
    #: class indices treated as normal / anomalous
    normal_classes: tuple[int, ...] = ()
    anomalous_classes: tuple[int, ...] = ()
    #: short id, e.g. ``"mnist/one-class/3"``
    name: str = ""
    #: one human-readable line, e.g. ``"mnist one-class, normal class 3 ('3'): ..."``
    description: str = ""


def _check_protocol(dataset: str, protocol: str, cls: int) -> int:
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    _check(dataset, "train")
    if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or not 0 <= cls < 10:
        raise DataError(f"class must be an integer in 0..9, got {cls!r}")
    return int(cls)


def make_novelty_split(
    dataset: str, protocol: str, cls: int, root: str | Path | None = None, test: bool = True
) -> NoveltySplit:
    """Build the ``protocol`` benchmark for class ``cls`` of ``dataset`` (see the module doc).

    The training set holds only normal images (all labels 0); the test set is the whole test
    split with labels 0 normal / 1 anomalous, and ``test_classes`` keeps each image's class.
    With ``test=False`` the test split is not read at all (``test`` is None, ``test_classes``
    empty): validation-only runs.
    """
    cls = _check_protocol(dataset, protocol, cls)
    names_of = CLASS_NAMES[dataset]

    train_images, train_labels = load_split(dataset, "train", root)
    if test:
        test_images, test_labels = load_split(dataset, "test", root)
    else:
        test_images = np.zeros((0, *_IMAGE_SHAPES[dataset]), np.uint8)
        test_labels = np.zeros(0, np.int64)

    is_cls_train = train_labels == cls
    is_cls_test = test_labels == cls
    if protocol == "one-class":
        keep = np.flatnonzero(is_cls_train)
        test_y = (~is_cls_test).astype(np.int64)
        normal_classes: tuple[int, ...] = (cls,)
        anomalous_classes = tuple(c for c in range(10) if c != cls)
        what = f"normal class {cls} ({names_of[cls]!r})"
    else:
        keep = np.flatnonzero(~is_cls_train)
        test_y = is_cls_test.astype(np.int64)
        normal_classes = tuple(c for c in range(10) if c != cls)
        anomalous_classes = (cls,)
        what = f"anomalous class {cls} ({names_of[cls]!r})"

    name = f"{dataset}/{protocol}/{cls}"
    train: ArrayImageSet | NoveltySubset
    if protocol == "one-class":
        # a tenth of the split: its own array (and cache entry), so one class's run never
        # pays the teacher for the whole split
        train = NoveltyImageSet(
            train_images[keep],
            labels=np.zeros(len(keep), dtype=np.int64),
            names=[f"train/{i:05d}" for i in keep],
            description=f"{dataset}/train/{protocol}/{cls}",
        )
    else:
        train = NoveltySubset(whole_split(dataset, "train", root), keep,
                              labels=np.zeros(len(keep), dtype=np.int64),
                              description=f"{dataset}/train/{protocol}/{cls}")
    test_set = NoveltyImageSet(
        test_images,
        labels=test_y,
        names=[f"test/{i:05d}" for i in range(len(test_images))],
        description=f"{dataset}/test/{protocol}/{cls}",
    ) if test else None
    n_anom = int(test_y.sum())
    description = (
        f"{dataset} {protocol}, {what}: train {len(train)} normal images, "
        + (f"test {len(test_y)} images ({len(test_y) - n_anom} normal / {n_anom} anomalous)"
           if test else "test split not read")
    )
    return NoveltySplit(
        train=train,
        test=test_set,
        dataset=dataset,
        protocol=protocol,
        normal_class=cls,
        test_classes=test_labels,
        train_classes=train_labels[keep],
        normal_classes=normal_classes,
        anomalous_classes=anomalous_classes,
        name=name,
        description=description,
    )


#: default size of the validation anomaly sample (see :func:`validation_anomalies`)
VALIDATION_ANOMALIES = 1000


def validation_anomalies(
    dataset: str, protocol: str, cls: int, seed: int, root: str | Path | None = None,
    max_images: int = VALIDATION_ANOMALIES,
) -> NoveltyImageSet:
    """Anomalous images for validation, from the training split only (see the module doc).

    ``one-class``: ``max_images // 9`` training images of each other class (all of a class when
    it has fewer); ``one-class-anomalous``: up to ``max_images`` training images of class ``cls``.
    Drawn without replacement by ``numpy.random.default_rng(seed)``; labels all 1; names
    ``train/<index>`` as in the training set.
    """
    cls = _check_protocol(dataset, protocol, cls)
    if max_images < 1:
        raise DataError(f"max_images must be at least 1, got {max_images}")
    images, labels = load_split(dataset, "train", root)
    rng = np.random.default_rng(seed)
    if protocol == "one-class":
        per_class = max(1, max_images // 9)
        picked = []
        for c in range(10):
            if c == cls:
                continue
            members = np.flatnonzero(labels == c)
            picked.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
        keep = np.sort(np.concatenate(picked))
        what = f"other classes' training images ({per_class} per class)"
    else:
        members = np.flatnonzero(labels == cls)
        keep = np.sort(rng.choice(members, size=min(max_images, len(members)), replace=False))
        what = f"class {cls} training images"
    sample = NoveltyImageSet(
        images[keep],
        labels=np.ones(len(keep), dtype=np.int64),
        names=[f"train/{i:05d}" for i in keep],
        description=f"{dataset}/train/{protocol}/{cls}/validation-anomalies: {len(keep)} {what}, "
                    f"seed {seed}",
    )
    sample.reuse_features = False  # one sample per run: no teacher-feature cache entry
    return sample
