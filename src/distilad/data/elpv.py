"""ELPV: electroluminescence images of solar cells, a grayscale industrial benchmark.

The data (Buerhop-Lutz et al. 2018; Deitsch et al. 2019; CC BY-NC-SA 4.0) ships on PyPI as
``elpv-dataset`` (about 90 MB), an optional dependency: ``pip install 'distilad[elpv]'``. It holds
2,624 cells of 300x300 8-bit gray pixels, each with the module type (``mono``- or
``poly``-crystalline) and an expert's probability that the cell is defective: 0, 1/3, 2/3 or 1.
Nothing of it is stored in this repository; it is read with the package's own
``elpv_dataset.utils.load_dataset`` and memoised per process.

Protocol ``elpv``, one category per module type (``mono``, ``poly``):

* normal = probability 0; anomalous = probability 1. The 1/3 and 2/3 cells are *uncertain*:
  never trained on, tested or validated on; a separate row scores them against the test normals
  (:attr:`ElpvSplit.uncertain`).
* The normals are shuffled once and split :data:`TRAIN_SHARE` (60 %) for training, the rest for
  testing. The detector holds out its own seeded share of the training normals
  (``holdout_fraction``, 10 % by default) to calibrate its threshold; those held-out normals are
  the normal side of the validation.
* The anomalous cells are shuffled once; :data:`VALIDATION_SHARE` (20 %, at least
  :data:`MIN_VALIDATION_ANOMALIES`) are reserved for validation
  (:attr:`ElpvSplit.validation_anomalies`), the rest go to the test. The test never sees a
  validation anomaly.
* The split is a fixed function of the data: the shuffles draw from
  ``numpy.random.default_rng([SPLIT_SEED, k])`` (``k`` = 0 for mono, 1 for poly), a constant,
  not the run's seed, so every seed of a benchmark shares one split and the seed varies only the
  training (and the detector's hold-out).

Sizes with ``elpv-dataset`` 1.0.0 (normal / uncertain 1/3 + 2/3 / anomalous cells, then the
split):

======== ====== ============ ========= ===== =========== ============================ =========
category normal uncertain    anomalous train test        validation anomalies         uncertain
======== ====== ============ ========= ===== =========== ============================ =========
mono     588    117 + 56     313       353   235 + 250   63 (+ ~35 held-out normals)  173
poly     920    178 + 50     402       552   368 + 322   80 (+ ~55 held-out normals)  228
======== ====== ============ ========= ===== =========== ============================ =========

(test: normal + anomalous; the held-out normals are the detector's 10 % of the training images.)
Images come out as (300, 300, 1) gray :class:`~distilad.data.base.ArrayImageSet` s, as the
MNIST novelty sets do; detectors with a colour teacher (RD) repeat them to three channels in
their preprocessing (:func:`distilad.data.transforms.to_tensor`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from distilad.data.base import ArrayImageSet
from distilad.errors import DataError

CATEGORIES: tuple[str, ...] = ("mono", "poly")
PROTOCOL = "elpv"
#: share of each category's normal cells used for training (the rest are test normals)
TRAIN_SHARE = 0.6
#: share of each category's anomalous cells reserved for validation (the rest are tested)
VALIDATION_SHARE = 0.2
#: ... but at least this many (fewer would make the validation AUROC too coarse)
MIN_VALIDATION_ANOMALIES = 10
#: the constant that seeds the split (never the run's seed: all seeds share one split)
SPLIT_SEED = 2624
#: defect probabilities of the uncertain cells
UNCERTAIN_PROBABILITIES = (1 / 3, 2 / 3)
INSTALL_HINT = "pip install 'distilad[elpv]' (or pip install elpv-dataset)"


@dataclass(frozen=True)
class ElpvData:
    """The whole dataset as the package gives it, row ``i`` of its ``labels.csv`` at index ``i``.

    ``images``: uint8 (N, 300, 300) gray; ``probabilities``: float (N,) in {0, 1/3, 2/3, 1};
    ``types``: str (N,), ``mono`` or ``poly``; ``names``: file name per cell (``cell0001.png``).
    """

    images: np.ndarray
    probabilities: np.ndarray
    types: np.ndarray
    names: tuple[str, ...]
    version: str = "?"


def load_elpv() -> ElpvData:
    """The ELPV cells from the ``elpv-dataset`` package, read once per process.

    Raises:
        DataError: the package is not installed (the message says how to install it), or its
            data does not look like ELPV.
    """
    return _read_package()


@functools.lru_cache(maxsize=1)
def _read_package() -> ElpvData:
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        raise DataError(f"the ELPV data needs the elpv-dataset package: {INSTALL_HINT}") from None
    import importlib.metadata
    import inspect
    from pathlib import Path

    images, probabilities, types = load_dataset()
    images = np.ascontiguousarray(images, dtype=np.uint8)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    types = np.asarray(types).astype(str)
    csv = Path(inspect.getfile(load_dataset)).parent / "data" / "labels.csv"
    names = tuple(Path(p).name for p in np.genfromtxt(csv, dtype=str, usecols=0))
    try:
        version = importlib.metadata.version("elpv-dataset")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed oddly
        version = "?"
    data = ElpvData(images, probabilities, types, names, version)
    check_data(data)
    images.flags.writeable = False  # shared through the memo
    return data


def check_data(data: ElpvData) -> None:
    """DataError unless ``data`` is a consistent set of gray cells with ELPV's labels."""
    n = len(data.images)
    if data.images.ndim != 3 or n == 0:
        raise DataError(f"elpv-dataset: expected gray images (N, H, W), got {data.images.shape}")
    if data.probabilities.shape != (n,) or data.types.shape != (n,) or len(data.names) != n:
        raise DataError(f"elpv-dataset: {n} images but {data.probabilities.shape} probabilities, "
                        f"{data.types.shape} types and {len(data.names)} names")
    known = np.isclose(data.probabilities[:, None], [0.0, *UNCERTAIN_PROBABILITIES, 1.0]).any(1)
    if not known.all():
        raise DataError("elpv-dataset: defect probabilities other than 0, 1/3, 2/3, 1: "
                        f"{sorted(set(data.probabilities[~known].tolist()))[:5]}")
    unknown_types = sorted(set(data.types.tolist()) - set(CATEGORIES))
    if unknown_types:
        raise DataError(f"elpv-dataset: module types other than mono / poly: {unknown_types}")


@dataclass
class ElpvSplit:
    """One category of the ``elpv`` protocol (see the module doc); image sets are gray
    (300, 300, 1) uint8 in memory, labels 0 normal / 1 anomalous."""

    category: str
    #: training normals (labels 0); the detector holds out its own share of them
    train: ArrayImageSet
    #: test normals then test anomalous cells (labels 0 / 1); None when not read (validation)
    test: ArrayImageSet | None
    #: anomalous cells reserved for validation (labels 1), never in the test
    validation_anomalies: ArrayImageSet
    #: the 1/3 and 2/3 cells (labels 1), to score against the test normals; None with the test
    uncertain: ArrayImageSet | None
    #: defect probability of every uncertain cell, aligned with ``uncertain``
    uncertain_probabilities: np.ndarray = field(repr=False)
    #: row indices into :class:`ElpvData` of each part ("train", "test_normal",
    #: "test_anomalous", "validation_anomalous", "uncertain"); all present even without test
    rows: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    description: str = ""


def split_rows(probabilities: np.ndarray, types: np.ndarray, category: str
               ) -> dict[str, np.ndarray]:
    """The protocol's fixed split of one category as sorted row indices (see the module doc):
    ``train``, ``test_normal``, ``test_anomalous``, ``validation_anomalous``, ``uncertain``.

    Raises:
        DataError: unknown category, no normal cell, or fewer than two anomalous cells.
    """
    if category not in CATEGORIES:
        raise DataError(f"unknown ELPV category {category!r}; choose {' or '.join(CATEGORIES)}")
    mine = types == category
    normal = np.flatnonzero(mine & np.isclose(probabilities, 0.0))
    anomalous = np.flatnonzero(mine & np.isclose(probabilities, 1.0))
    uncertain = np.flatnonzero(mine & ~np.isclose(probabilities, 0.0)
                               & ~np.isclose(probabilities, 1.0))
    if len(normal) < 2 or len(anomalous) < 2:
        raise DataError(f"ELPV {category}: {len(normal)} normal and {len(anomalous)} anomalous "
                        "cells; the protocol needs at least 2 of each")
    rng = np.random.default_rng([SPLIT_SEED, CATEGORIES.index(category)])
    normal, anomalous = rng.permutation(normal), rng.permutation(anomalous)
    n_train = min(max(1, int(round(TRAIN_SHARE * len(normal)))), len(normal) - 1)
    n_val = min(max(MIN_VALIDATION_ANOMALIES, int(round(VALIDATION_SHARE * len(anomalous)))),
                len(anomalous) - 1)
    return {"train": np.sort(normal[:n_train]), "test_normal": np.sort(normal[n_train:]),
            "test_anomalous": np.sort(anomalous[n_val:]),
            "validation_anomalous": np.sort(anomalous[:n_val]), "uncertain": np.sort(uncertain)}


def make_elpv_split(category: str, test: bool = True) -> ElpvSplit:
    """The ``elpv`` protocol's images of ``category`` (``mono`` or ``poly``).

    With ``test=False`` (validation-only runs) neither the test cells nor the uncertain cells
    (whose row is scored against the test normals) are put into image sets: ``test`` and
    ``uncertain`` are None.
    """
    data = load_elpv()
    rows = split_rows(data.probabilities, data.types, category)

    def image_set(part: str, rows_: np.ndarray, labels: np.ndarray) -> ArrayImageSet:
        s = ArrayImageSet(data.images[rows_][..., None], labels=labels,
                          names=[data.names[i] for i in rows_],
                          description=f"elpv/{category}/{part}", layout="NHWC")
        s.array.flags.writeable = False
        return s

    n = {k: len(v) for k, v in rows.items()}
    train = image_set("train", rows["train"], np.zeros(n["train"], np.int64))
    validation = image_set("validation-anomalies", rows["validation_anomalous"],
                           np.ones(n["validation_anomalous"], np.int64))
    test_set = uncertain = None
    if test:
        both = np.concatenate([rows["test_normal"], rows["test_anomalous"]])
        test_set = image_set("test", both, np.r_[np.zeros(n["test_normal"], np.int64),
                                                 np.ones(n["test_anomalous"], np.int64)])
        uncertain = image_set("uncertain", rows["uncertain"], np.ones(n["uncertain"], np.int64))
    description = (
        f"elpv-dataset {data.version}, {category}: train {n['train']} normal cells, "
        + (f"test {n['test_normal']} normal / {n['test_anomalous']} anomalous"
           if test else "test not read")
        + f", validation anomalies {n['validation_anomalous']}, uncertain {n['uncertain']} "
        f"(split seed {SPLIT_SEED})")
    return ElpvSplit(category, train, test_set, validation, uncertain,
                     data.probabilities[rows["uncertain"]] if test else np.zeros(0), rows,
                     description)
