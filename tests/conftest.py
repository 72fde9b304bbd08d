"""Shared fixtures: the embedded MVTec AD bottle copy, a tiny MVTec-style category built from it,
and the optional shared data folder (real ImageNet samples, MNIST, ...)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BOTTLE = REPO / "data" / "mvtec_ad" / "bottle"

# one thread: deterministic and friendly to whatever else runs on the machine
torch.set_num_threads(1)

TINY_SIZE = 64
TINY_TRAIN = 12
TINY_TEST_PER_TYPE = 3


@pytest.fixture(scope="session")
def bottle_dir() -> Path:
    """The embedded MVTec AD bottle category (repo ``data/mvtec_ad/bottle``)."""
    assert (BOTTLE / "train" / "good").is_dir(), f"embedded data missing: {BOTTLE}"
    return BOTTLE


def _copy_small(src: Path, dst: Path, size: int, resample: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.resize((size, size), resample).save(dst)


def build_tiny_mvtec(root: Path, n_train: int = TINY_TRAIN, n_test: int = TINY_TEST_PER_TYPE,
                     size: int = TINY_SIZE, name: str = "tiny") -> Path:
    """An MVTec-style category ``root/name`` with images from the bottle copy at ``size`` px:
    ``n_train`` train/good images, ``n_test`` test images per type (good + 3 defects) and the
    defects' masks. File names and extensions (.jpg images, _mask.png masks) follow MVTec."""
    cat = root / name
    for p in sorted((BOTTLE / "train" / "good").glob("*.jpg"))[:n_train]:
        _copy_small(p, cat / "train" / "good" / p.name, size, Image.BILINEAR)
    for sub in sorted(d for d in (BOTTLE / "test").iterdir() if d.is_dir()):
        for p in sorted(sub.glob("*.jpg"))[:n_test]:
            _copy_small(p, cat / "test" / sub.name / p.name, size, Image.BILINEAR)
            if sub.name != "good":
                m = BOTTLE / "ground_truth" / sub.name / f"{p.stem}_mask.png"
                _copy_small(m, cat / "ground_truth" / sub.name / m.name, size, Image.NEAREST)
    return cat


@pytest.fixture(scope="session")
def _tiny_mvtec_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_mvtec(tmp_path_factory.mktemp("tiny-master"))


@pytest.fixture
def tiny_mvtec(tmp_path: Path, _tiny_mvtec_master: Path) -> Path:
    """A fresh copy (per test, so tests may modify it) of the tiny MVTec-style category:
    12 train/good, 3 test images per type (good, broken_large, broken_small, contamination) with
    masks, all 64x64."""
    import shutil

    dst = tmp_path / "mvtec" / "tiny"
    shutil.copytree(_tiny_mvtec_master, dst)
    return dst


DATA_ENV = "DISTILAD_DATA"


def find_shared_data() -> tuple[Path | None, str]:
    """The optional shared data folder and, when it is absent, why: ``$DISTILAD_DATA`` when set
    (and only it, so a wrong setting is reported rather than silently replaced), else
    ``../shared/data`` next to the checkout. No other place is looked at."""
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        cand = Path(env).expanduser()
        if cand.is_dir():
            return cand, ""
        return None, f"${DATA_ENV}={env} is not a folder"
    cand = REPO.parent / "shared" / "data"
    if cand.is_dir():
        return cand, ""
    return None, (f"shared data folder not found: set ${DATA_ENV} to it, or place it at "
                  f"../shared/data next to the checkout")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$DISTILAD_DATA`` or ``../shared/data`` (see :func:`find_shared_data`); the test is
    skipped, with the reason, when it is absent."""
    root, why = find_shared_data()
    if root is None:
        pytest.skip(why)
    return root
