"""Reading image files of any common kind into float arrays.

Gray, RGB, RGBA, palette, 8-bit and 16-bit PNG/TIFF/JPEG/BMP files all come out as float32
``(H, W, C)`` in ``[0, 1]`` with ``C`` 1 (gray) or 3 (colour).

Size limit: an image of more than ``max_image_pixels()`` pixels (width x height) is refused
with a DataError before it is decoded (a guard against decompression bombs: a small file that
decodes to gigabytes). The limit is PIL's ``Image.MAX_IMAGE_PIXELS`` (89,478,485 pixels, about
9459 x 9459, unless changed) or the environment variable ``DISTILAD_MAX_IMAGE_PIXELS`` (a pixel
count, or ``none`` for no limit).
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from distilad.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: environment variable that overrides the pixel limit (an integer, or "none").
PIXEL_LIMIT_ENV = "DISTILAD_MAX_IMAGE_PIXELS"
_OPEN_LOCK = threading.Lock()


def max_image_pixels() -> int | None:
    """The largest image (width x height) that is read; None = no limit. See the module doc."""
    env = os.environ.get(PIXEL_LIMIT_ENV, "").strip()
    if not env:
        return Image.MAX_IMAGE_PIXELS
    if env.lower() == "none":
        return None
    try:
        limit = int(env)
    except ValueError:
        limit = 0
    if limit < 1:
        raise DataError(f"{PIXEL_LIMIT_ENV} must be a positive pixel count or 'none', got {env!r}")
    return limit


def open_header(fp: str | Path | BinaryIO) -> Image.Image:
    """``PIL.Image.open`` (header only, lazy) of a path or binary file object, with PIL's own
    pixel check (a warning, then an error at twice its limit) switched off for the open, so the
    caller applies its own limit to ``width * height``. PIL's check is global state: switched
    under a lock, so threads opening images at once do not race."""
    with _OPEN_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(fp)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def open_image(path: str | Path) -> Image.Image:
    """``PIL.Image.open`` (header only, lazy) with the size checked against
    :func:`max_image_pixels`; DataError when the image is larger."""
    limit = max_image_pixels()
    im = open_header(path)
    pixels = im.width * im.height
    if limit is not None and pixels > limit:
        im.close()
        raise DataError(
            f"image {path} is {im.width}x{im.height} = {pixels:,} pixels, over the limit of "
            f"{limit:,} (a guard against decompression bombs); if you trust it, set "
            f"{PIXEL_LIMIT_ENV}={pixels} (or none) to read it")
    return im


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding; DataError when unreadable or
    over the pixel limit."""
    try:
        with open_image(path) as im:
            return (im.height, im.width)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"image not found: {path}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from e


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
        with open_image(path) as im, warnings.catch_warnings():
            # frames or tiles checked while decoding (e.g. GIF) report sizes this way
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
            return pil_to_array(im)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"image not found: {path}") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"image {path} is too large to decode safely ({e}); if you trust it, "
                        f"set {PIXEL_LIMIT_ENV}=none") from e
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
