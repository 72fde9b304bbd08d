"""Checking and decoding one uploaded image file for the inspection server.

An upload is refused with an :class:`UploadError` (a one-line message and the HTTP status to
answer with) when it is empty, over the byte limit, of a content type that is not an image, not
decodable by PIL, or over the pixel limit (checked from the header, before decoding: a small
file can decode to gigabytes). Accepted images come out exactly as
:func:`distilad.data.images.read_image` reads a file: float32 (H, W, C) in [0, 1], C in {1, 3},
so a served score equals ``det.score`` on the same file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from distilad.data.base import ImageSet
from distilad.data.images import max_image_pixels, open_header, pil_to_array
from distilad.errors import DistiladError

#: default largest upload in bytes (the whole multipart request body may exceed it slightly).
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: part content types accepted besides ``image/*`` (what browsers and curl send for unknown files).
GENERIC_CONTENT_TYPES = ("", "application/octet-stream")


class UploadError(DistiladError):
    """An upload the server refuses: ``status`` is the HTTP status code (4xx) to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    """``max_bytes``: largest file in bytes; ``max_pixels``: largest width x height (None: no
    limit). The default pixel limit is PIL's decompression-bomb limit (or
    ``$DISTILAD_MAX_IMAGE_PIXELS``), as for image files read from disk."""

    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int | None = None

    @classmethod
    def default(cls, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> UploadLimits:
        return cls(max_bytes=max_bytes, max_pixels=max_image_pixels())


def check_content_type(content_type: str | None, filename: str) -> None:
    """Refuse (415) a part whose declared type is neither ``image/*`` nor generic."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in GENERIC_CONTENT_TYPES or kind.startswith("image/"):
        return
    raise UploadError(f"{filename}: content type {kind!r} is not an image; upload an image file "
                      f"(png, jpg, bmp, tiff, webp)", status=415)


def decode_image(data: bytes, filename: str, limits: UploadLimits) -> np.ndarray:
    """The uploaded bytes as float32 (H, W, C) in [0, 1], C in {1, 3}; UploadError otherwise.

    Args:
        data: the file's bytes.
        filename: the client's file name, for messages.
        limits: byte and pixel limits.
    """
    if not data:
        raise UploadError(f"{filename}: the file is empty")
    if len(data) > limits.max_bytes:
        raise UploadError(f"{filename}: {len(data):,} bytes, over the server's limit of "
                          f"{limits.max_bytes:,} bytes", status=413)
    try:  # PIL's own pixel check is off for the open: ours comes next
        im = open_header(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise UploadError(f"{filename}: not an image (no image format PIL can read); upload "
                          f"a png, jpg, bmp, tiff or webp file") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise UploadError(f"{filename}: unreadable image header ({_first_line(e)})") from e
    pixels = im.width * im.height
    if limits.max_pixels is not None and pixels > limits.max_pixels:
        raise UploadError(f"{filename}: {im.width}x{im.height} = {pixels:,} pixels, over the "
                          f"server's limit of {limits.max_pixels:,} (a guard against "
                          f"decompression bombs; see `distilad serve --help`)", status=413)
    try:
        with im:  # (frames of animated files are checked against PIL's limit while decoding)
            im.load()
            return pil_to_array(im)
    except Image.DecompressionBombError as e:
        raise UploadError(f"{filename}: too large to decode safely ({_first_line(e)})",
                          status=413) from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt image data
        raise UploadError(f"{filename}: the image data is corrupt ({_first_line(e)})") from e


class OneImage(ImageSet):
    """A decoded upload as an :class:`ImageSet` of one image named ``name``."""

    def __init__(self, image: np.ndarray, name: str):
        self.array = image
        self.names = [name]
        self.description = f"upload {name}"

    def __len__(self) -> int:
        return 1

    def image(self, i: int) -> np.ndarray:
        if i != 0:
            raise IndexError(i)
        return self.array


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
