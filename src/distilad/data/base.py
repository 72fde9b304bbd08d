"""The one image-collection type every detector consumes.

An :class:`ImageSet` is an indexable collection of images with optional labels (0 = normal,
1 = anomalous), optional pixel masks and names. Images come out as ``float32`` arrays of shape
``(H, W, C)`` with values in ``[0, 1]`` and ``C`` in ``{1, 3}``; each detector's own preprocessing
turns them into the tensors it needs.

In-memory images (numpy arrays or torch tensors, see :class:`ArrayImageSet`) are accepted in
exactly these layouts; an array is always a batch, the image index first:

- ``(N, H, W)``: N gray images;
- ``(N, H, W, C)`` or ``(N, C, H, W)`` with C = 1 (gray), 3 (RGB) or 4 (RGBA, alpha dropped);
- a list of ``(H, W)`` / ``(H, W, C)`` arrays (channels last), sizes may differ.

Shapes that could be read two ways are refused with a message that says how to pass them: a
3-D array whose last axis is 1, 3 or 4 (one ``(H, W, C)`` image, or N gray images of width C?:
pass ``x[None]`` for one image) or whose first axis is 3 or 4 (one ``(C, H, W)`` image?), a 4-D
array with 1, 3 or 4 on both axis 1 and axis 3, a 2-D array (one gray image: pass ``x[None]``).
Values: ``uint8`` (0..255), ``uint16`` (0..65535), ``bool``, or floats in ``[0, 1]``. Float
images above 1 (0..255 values: divide by 255 or pass uint8) or below 0, other integer types
and non-finite values (NaN, inf) are refused: each would give scores without meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from distilad.errors import DataError

#: channel counts an array's channel axis may have.
CHANNEL_COUNTS = (1, 3, 4)
#: floats within this much outside [0, 1] are rounding, not a wrong scale (clipped).
_FLOAT_TOLERANCE = 1e-3


class ImageSet:
    """Base class: subclasses implement ``__len__`` and ``image``; ``mask`` is optional."""

    #: 0 = normal, 1 = anomalous, shape (N,); None when unknown (e.g. unlabelled folders).
    labels: np.ndarray | None = None
    #: one string per image (file name or index), used in reports and outputs.
    names: list[str]
    #: True when at least one image has a ground-truth mask.
    has_masks: bool = False
    #: short description for progress messages and result files.
    description: str = ""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def image(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        """Image ``i`` as float32 (H, W, C) in [0, 1], C in {1, 3}."""
        raise NotImplementedError

    def mask(self, i: int) -> np.ndarray | None:
        """Ground-truth mask of image ``i`` as bool (H, W), or None when there is none."""
        return None

    def __getitem__(self, i: int) -> np.ndarray:
        return self.image(i)

    def image_shape(self, i: int) -> tuple[int, int]:
        """(H, W) of image ``i`` (subclasses answer without decoding where they can)."""
        return tuple(self.image(i).shape[:2])

    def subset(self, indices: Sequence[int]) -> ImageSet:
        """A view on the images at ``indices`` (labels, masks and names follow)."""
        return SubsetImageSet(self, list(indices))

    @property
    def fingerprint(self) -> str:
        """A string that identifies the content (used as a cache key); subclasses refine it."""
        return f"{type(self).__name__}:{self.description}:{len(self)}"

    @property
    def content_fingerprint(self) -> str:
        """Identifies the pixels only (not labels or names): the teacher-feature cache key."""
        return self.fingerprint


class SubsetImageSet(ImageSet):
    """Images ``indices`` of ``parent``."""

    def __init__(self, parent: ImageSet, indices: list[int]):
        self.parent = parent
        self.indices = indices
        self.names = [parent.names[i] for i in indices]
        self.labels = None if parent.labels is None else np.asarray(parent.labels)[indices]
        self.has_masks = parent.has_masks
        self.description = parent.description

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int) -> np.ndarray:
        return self.parent.image(self.indices[i])

    def image_shape(self, i: int) -> tuple[int, int]:
        return self.parent.image_shape(self.indices[i])

    def mask(self, i: int) -> np.ndarray | None:
        return self.parent.mask(self.indices[i])

    @property
    def fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha1(np.asarray(self.indices, dtype=np.int64).tobytes()).hexdigest()[:16]
        return f"{self.parent.fingerprint}[{digest}]"

    @property
    def content_fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha1(np.asarray(self.indices, dtype=np.int64).tobytes()).hexdigest()[:16]
        return f"{self.parent.content_fingerprint}[{digest}]"


class ArrayImageSet(ImageSet):
    """In-memory images: a numpy array (or torch tensor) of shape (N, H, W), (N, H, W, C) or
    (N, C, H, W), C in {1, 3, 4}; see the module docstring for the exact rules.

    ``layout`` ("NHW", "NHWC" or "NCHW") states the layout where the shape alone is ambiguous.
    Integer arrays (uint8, uint16) are scaled by their maximum; float arrays must be in [0, 1].
    Raises DataError for ambiguous shapes, wrong value ranges and non-finite values.
    """

    def __init__(
        self,
        images: Any,
        labels: Sequence[int] | np.ndarray | None = None,
        masks: np.ndarray | None = None,
        names: Sequence[str] | None = None,
        description: str = "arrays",
        layout: str | None = None,
    ):
        arr = to_numpy(images)
        arr = channels_last(arr, layout)
        check_pixel_values(arr)
        self.array = arr
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and self.labels.shape != (len(arr),):
            raise DataError(f"{self.labels.size} labels for {len(arr)} images")
        self.masks = None if masks is None else np.asarray(masks).astype(bool)
        self.has_masks = self.masks is not None
        self.names = list(names) if names is not None else [str(i) for i in range(len(arr))]
        self.description = description

    def __len__(self) -> int:
        return len(self.array)

    def image(self, i: int) -> np.ndarray:
        return to_float_image(self.array[i])

    def image_shape(self, i: int) -> tuple[int, int]:
        return tuple(self.array.shape[1:3])

    def mask(self, i: int) -> np.ndarray | None:
        return None if self.masks is None else self.masks[i]

    @property
    def content_fingerprint(self) -> str:
        if getattr(self, "_content_fp", None) is None:
            import hashlib

            h = hashlib.sha1(np.ascontiguousarray(self.array).tobytes())
            self._content_fp = f"arrays:{h.hexdigest()[:20]}:{self.array.shape}"
        return self._content_fp

    @property
    def fingerprint(self) -> str:
        import hashlib

        labels = b"" if self.labels is None else self.labels.tobytes()
        return f"{self.content_fingerprint}:{hashlib.sha1(labels).hexdigest()[:12]}"


def to_float_image(arr: np.ndarray) -> np.ndarray:
    """One checked image array (H, W) / (H, W, C) of uint8, uint16, bool or float in [0, 1] to
    float32 (H, W, C) in [0, 1], C in {1, 3} (alpha dropped)."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if a.dtype == bool:
        return a.astype(np.float32)
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def to_numpy(images: Any) -> np.ndarray:
    """A numpy array or torch tensor (any device, float16 / bfloat16 included) as numpy."""
    try:
        import torch

        if isinstance(images, torch.Tensor):
            t = images.detach().cpu()
            if t.dtype in (torch.float16, torch.bfloat16):
                t = t.float()
            return t.numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(images)


def channels_last(arr: np.ndarray, layout: str | None = None) -> np.ndarray:
    """A batch of images (see the module docstring) as an (N, H, W, C) view, C in {1, 3, 4};
    DataError for a shape that is not a batch of images or could be read two ways."""
    shape = tuple(arr.shape)
    if layout is not None:
        wanted = {"NHW": 3, "NHWC": 4, "NCHW": 4}
        if layout not in wanted:
            raise DataError(f"layout must be one of {', '.join(wanted)}, got {layout!r}")
        if arr.ndim != wanted[layout]:
            raise DataError(f"layout {layout} needs a {wanted[layout]}-D array, got shape {shape}")
    if arr.ndim >= 1 and shape[0] == 0:
        raise DataError(f"no images: the array has shape {shape}")
    if arr.ndim == 2:
        raise DataError(f"a 2-D array {shape} is one gray image, but arrays are batches (image "
                        f"index first): pass x[None] for one image")
    if arr.ndim == 3:
        n, h, w = shape
        if layout is None and w in CHANNEL_COUNTS:
            raise DataError(
                f"images of shape {shape} are ambiguous: one ({n}, {h}, {w}) image with {w} "
                f"channel(s), or {n} gray images of {h}x{w}? Pass x[None] for one image, or "
                f"layout='NHW' (ArrayImageSet) / a list of (H, W) arrays for gray images")
        if layout is None and n in (3, 4):
            raise DataError(
                f"images of shape {shape} are ambiguous: one ({n}, {h}, {w}) channels-first image, "
                f"or {n} gray images? Pass x[None] for one image, or layout='NHW' "
                f"(ArrayImageSet) / a list of (H, W) arrays for {n} gray images")
        return arr[..., None]
    if arr.ndim == 4:
        first, last = shape[1] in CHANNEL_COUNTS, shape[3] in CHANNEL_COUNTS
        if layout == "NHWC" or (layout is None and last and not first):
            if not last:
                raise DataError(f"layout NHWC needs 1, 3 or 4 channels on axis 3, got {shape}")
            return arr
        if layout == "NCHW" or (layout is None and first and not last):
            if not first:
                raise DataError(f"layout NCHW needs 1, 3 or 4 channels on axis 1, got {shape}")
            return arr.transpose(0, 2, 3, 1)
        if first and last:
            raise DataError(
                f"images of shape {shape} are ambiguous: channels could be axis 1 ({shape[1]}) or "
                f"axis 3 ({shape[3]}); pass layout='NCHW' or 'NHWC' (ArrayImageSet), or a list "
                f"of (H, W, C) arrays")
        raise DataError(f"images of shape {shape}: a 4-D array needs 1, 3 or 4 channels on axis 1 "
                        f"(N, C, H, W) or axis 3 (N, H, W, C)")
    raise DataError(f"images of shape {shape}: expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
                    f"arrays, or a list of (H, W) / (H, W, C) arrays")


def check_pixel_values(arr: np.ndarray, what: str = "images") -> None:
    """DataError unless ``arr`` holds uint8 / uint16 / bool values or finite floats in [0, 1]."""
    if arr.dtype in (np.uint8, np.uint16, np.bool_):
        return
    if np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what} of type {arr.dtype}: pass uint8 (0..255), uint16 (0..65535) or "
                        f"floats in [0, 1] (e.g. x.astype(np.uint8) for 0..255 values)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{what} of type {arr.dtype}: pass uint8, uint16 or float arrays")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        first = int(np.argwhere(~finite)[0][0]) if arr.ndim > 1 else 0
        raise DataError(f"{what} hold {bad} non-finite value(s) (NaN or inf), the first in image "
                        f"{first}: replace or drop them")
    lo, hi = float(arr.min()), float(arr.max())
    if hi > 1 + _FLOAT_TOLERANCE:
        hint = ("divide 0..255 values by 255 (x / 255) or pass uint8" if hi <= 255
                else "scale them to [0, 1]")
        raise DataError(f"float {what} must be in [0, 1], these reach {hi:g}: {hint}")
    if lo < -_FLOAT_TOLERANCE:
        hint = "for [-1, 1] images pass (x + 1) / 2" if lo >= -1 else "scale them to [0, 1]"
        raise DataError(f"float {what} must be in [0, 1], these go down to {lo:g}: {hint}")
