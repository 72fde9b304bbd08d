"""MVTec AD category folders.

Layout (masks optional; only ``train/good`` is needed to fit)::

    <category>/train/good/*.png|jpg
    <category>/test/<good|defect type>/*.png|jpg
    <category>/ground_truth/<defect type>/<stem>_mask.png
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distilad.data.base import ImageSet
from distilad.data.images import list_images, read_image, read_image_size, read_mask
from distilad.errors import DataError


def is_mvtec_category(folder: Path) -> bool:
    """True when ``folder`` looks like an MVTec AD category (has ``train/good``)."""
    return (folder / "train" / "good").is_dir()


class FileImageSet(ImageSet):
    """Images read from files, with optional labels and mask files."""

    def __init__(
        self,
        paths: list[Path],
        labels: list[int] | None,
        mask_paths: list[Path | None] | None,
        description: str,
        names: list[str] | None = None,
        groups: list[str] | None = None,
    ):
        self.paths = paths
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.mask_paths = mask_paths
        self.has_masks = mask_paths is not None and any(m is not None for m in mask_paths)
        self.names = names if names is not None else [p.name for p in paths]
        #: defect type per image ("good", "broken_large", ...) where known.
        self.groups = groups
        self.description = description

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        return read_image(self.paths[i])

    def image_shape(self, i: int) -> tuple[int, int]:
        """(H, W) from the file header, without decoding; DataError when unreadable or too large."""
        return read_image_size(self.paths[i])

    def mask(self, i: int) -> np.ndarray | None:
        if self.mask_paths is None or self.mask_paths[i] is None:
            if self.has_masks:
                # an image without a mask file in a masked set is normal everywhere
                h, w = self.image(i).shape[:2]
                return np.zeros((h, w), dtype=bool)
            return None
        return read_mask(self.mask_paths[i])

    @property
    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha1()
        for p in self.paths:
            st = p.stat()
            h.update(f"{p.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode())
        return f"files:{h.hexdigest()[:20]}:{len(self.paths)}"


def mvtec_train(folder: str | Path) -> FileImageSet:
    """The normal training images ``train/good`` of an MVTec-style category."""
    folder = Path(folder)
    good = folder / "train" / "good"
    paths = list_images(good)
    if not paths:
        raise DataError(f"no images in {good}")
    return FileImageSet(paths, [0] * len(paths), None, f"{folder.name}/train",
                        names=[f"good/{p.name}" for p in paths],
                        groups=["good"] * len(paths))


def mvtec_test(folder: str | Path) -> FileImageSet:
    """The test images of an MVTec-style category: ``test/good`` normal, other sub-folders anomalous.

    Masks are looked up in ``ground_truth/<type>/<stem>_mask.png`` (or same stem, any image type).
    """
    folder = Path(folder)
    test = folder / "test"
    if not test.is_dir():
        raise DataError(f"no test folder in {folder} (expected {test})")
    paths: list[Path] = []
    labels: list[int] = []
    masks: list[Path | None] = []
    groups: list[str] = []
    for sub in sorted(d for d in test.iterdir() if d.is_dir()):
        for p in list_images(sub):
            paths.append(p)
            normal = sub.name == "good"
            labels.append(0 if normal else 1)
            groups.append(sub.name)
            masks.append(None if normal else _find_mask(folder, sub.name, p.stem))
    if not paths:
        raise DataError(f"no images in {test}/*/")
    has_any_mask = any(m is not None for m in masks)
    names = [f"{g}/{p.name}" for g, p in zip(groups, paths, strict=True)]
    return FileImageSet(paths, labels, masks if has_any_mask else None, f"{folder.name}/test",
                        names=names, groups=groups)


def _find_mask(folder: Path, defect: str, stem: str) -> Path | None:
    gt = folder / "ground_truth" / defect
    for cand in (gt / f"{stem}_mask.png", gt / f"{stem}.png"):
        if cand.is_file():
            return cand
    return None
