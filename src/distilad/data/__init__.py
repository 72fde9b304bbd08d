"""Datasets: MVTec-style folders, plain image folders, in-memory arrays, novelty protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distilad.data.base import ArrayImageSet, ImageSet
from distilad.data.folder import image_files, image_folder
from distilad.data.images import read_image
from distilad.data.mvtec import FileImageSet, is_mvtec_category, mvtec_test, mvtec_train
from distilad.errors import DataError

__all__ = [
    "ArrayImageSet", "FileImageSet", "ImageSet", "as_image_set", "image_files", "image_folder",
    "mvtec_test", "mvtec_train", "read_image",
]


def as_image_set(data: Any, split: str = "train") -> ImageSet:
    """Turn what a user passes into an :class:`ImageSet`.

    ``data`` may be an ImageSet, a path (an MVTec-style category, where ``split`` picks
    ``train/good`` or ``test``; or a plain folder of images; or one image file), a list of paths,
    a numpy array / torch tensor of images (N,H,W), (N,H,W,C) or (N,C,H,W), or a list of arrays.
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
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (str, Path)):
        return image_files(list(data))
    try:
        import torch

        if isinstance(data, torch.Tensor):
            data = data.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], np.ndarray):
        shapes = {a.shape for a in data}
        if len(shapes) == 1:
            data = np.stack(data)
        else:
            return _RaggedArrays(list(data))
    if isinstance(data, np.ndarray):
        return ArrayImageSet(data)
    raise DataError(f"cannot use {type(data).__name__} as images: give a folder, files or an array")


class _RaggedArrays(ImageSet):
    """A list of images of different sizes."""

    def __init__(self, arrays: list[np.ndarray]):
        from distilad.data.base import to_float_image

        self._arrays = arrays
        self._to_float = to_float_image
        self.names = [str(i) for i in range(len(arrays))]
        self.description = "arrays"

    def __len__(self) -> int:
        return len(self._arrays)

    def image(self, i: int) -> np.ndarray:
        return self._to_float(self._arrays[i])
