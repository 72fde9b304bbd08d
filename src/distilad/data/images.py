"""Reading image files of any common kind into float arrays.

Gray, RGB, RGBA, palette, 8-bit and 16-bit PNG/TIFF/JPEG/BMP files all come out as float32
``(H, W, C)`` in ``[0, 1]`` with ``C`` 1 (gray) or 3 (colour).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from distilad.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: Path) -> bool:
    """True for a regular file whose extension is a supported image type."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (optionally in sub-folders too)."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if is_image_file(p))


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as float32 (H, W, C) in [0, 1], C in {1, 3}.

    Raises DataError with the file name when the file is missing or cannot be decoded.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_array(im)
    except FileNotFoundError as e:
        raise DataError(f"image not found: {path}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


def pil_to_array(im: Image.Image) -> np.ndarray:
    """PIL image of any mode -> float32 (H, W, C) in [0, 1]."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(im, dtype=np.uint16).astype(np.float32) / 65535.0
        return a[..., None]
    if mode == "I":
        a = np.asarray(im, dtype=np.int64)
        scale = 65535.0 if a.max(initial=0) > 255 else 255.0
        return (a.astype(np.float32) / scale).clip(0, 1)[..., None]
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        hi = float(a.max(initial=1.0))
        return (a / (hi if hi > 1.0 else 1.0)).clip(0, 1)[..., None]
    if mode in ("1", "L", "LA"):
        a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        return a[..., None]
    a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return a


def read_mask(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask as bool (H, W): any non-zero pixel is anomalous."""
    a = read_image(path)
    return a[..., 0] > 0
