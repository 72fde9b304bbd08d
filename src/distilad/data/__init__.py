"""Datasets: MVTec-style folders, plain image folders, in-memory arrays, novelty protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distilad.data.base import (
    CHANNEL_COUNTS,
    ArrayImageSet,
    ImageSet,
    check_pixel_values,
    to_float_image,
    to_numpy,
)
from distilad.data.folder import image_files, image_folder
from distilad.data.images import read_image
from distilad.data.mvtec import FileImageSet, is_mvtec_category, mvtec_test, mvtec_train
from distilad.errors import DataError

__all__ = [
    "ArrayImageSet", "FileImageSet", "ImageSet", "as_image_set", "check_readable", "image_files",
    "image_folder", "mvtec_test", "mvtec_train", "read_image", "with_labels",
]


def as_image_set(data: Any, split: str = "train") -> ImageSet:
    """Turn what a user passes into an :class:`ImageSet`.

    ``data`` may be an ImageSet, a path (an MVTec-style category, where ``split`` picks
    ``train/good`` or ``test``; or a plain folder of images; or one image file), a list of paths,
    a numpy array / torch tensor of images (N,H,W), (N,H,W,C) or (N,C,H,W), or a list of (H,W) /
    (H,W,C) arrays or tensors (channels last). The accepted array layouts and value ranges are
    exactly those of :mod:`distilad.data.base`; anything else is a DataError that says how to
    pass it.
    """
    if isinstance(data, ImageSet):
        return data
    if isinstance(data, (str, Path)):
        p = Path(data)
        if not p.exists():
            raise DataError(f"no such file or folder: {p}")
        if p.is_dir() and is_mvtec_category(p):
            return mvtec_train(p) if split == "train" else mvtec_test(p)
        if p.is_dir():
            return image_folder(p)
        return image_files([p])
    if isinstance(data, (list, tuple)):
        if not data:
            raise DataError("no images given (an empty list)")
        if all(isinstance(d, (str, Path)) for d in data):
            return image_files(list(data))
        return _image_list(list(data))
    if isinstance(data, np.ndarray) or _is_tensor(data):
        return ArrayImageSet(data)
    raise DataError(f"cannot use {type(data).__name__} as images: give a folder, files, an array "
                    f"(N,H,W), (N,H,W,C), (N,C,H,W) or a list of (H,W[,C]) arrays")


def _is_tensor(data: Any) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(data, torch.Tensor)


def _image_list(items: list[Any]) -> ImageSet:
    """A list of single images, each (H, W) or (H, W, C) with C in {1, 3, 4} (channels last)."""
    arrays = []
    for i, item in enumerate(items):
        if not (isinstance(item, np.ndarray) or _is_tensor(item)):
            raise DataError(f"list item {i} is a {type(item).__name__}: give a list of image "
                            f"arrays or a list of paths, not a mix")
        a = to_numpy(item)
        if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in CHANNEL_COUNTS)):
            raise DataError(f"list item {i} has shape {a.shape}: list items are single images, "
                            f"(H, W) or (H, W, C) with C 1, 3 or 4 (channels last)")
        check_pixel_values(a, what=f"image {i}")
        arrays.append(a if a.ndim == 3 else a[..., None])
    if len({a.shape for a in arrays}) == 1 and len({a.dtype for a in arrays}) == 1:
        return ArrayImageSet(np.stack(arrays), layout="NHWC")
    return _RaggedArrays(arrays)


def with_labels(images: ImageSet, labels: Any) -> ImageSet:
    """``images`` with ``labels`` (N,) of 0 (normal) / 1 (anomalous) attached (a view)."""
    y = np.asarray(to_numpy(labels)).ravel()
    if y.shape != (len(images),):
        raise DataError(f"{y.size} labels for {len(images)} images")
    if not np.all((y == 0) | (y == 1)):
        raise DataError("labels must be 0 (normal) or 1 (anomalous)")
    view = images.subset(range(len(images)))
    view.labels = y.astype(np.int64)
    return view


def check_readable(images: ImageSet) -> None:
    """Read the size of every image (file headers only), so that a missing, unreadable or
    oversized file fails with a DataError before any work starts."""
    for i in range(len(images)):
        images.image_shape(i)


class _RaggedArrays(ImageSet):
    """A list of checked (H, W, C) images of different sizes."""

    def __init__(self, arrays: list[np.ndarray]):
        self._arrays = arrays
        self.names = [str(i) for i in range(len(arrays))]
        self.description = "arrays"

    def __len__(self) -> int:
        return len(self._arrays)

    def image(self, i: int) -> np.ndarray:
        return to_float_image(self._arrays[i])

    def image_shape(self, i: int) -> tuple[int, int]:
        return tuple(self._arrays[i].shape[:2])
