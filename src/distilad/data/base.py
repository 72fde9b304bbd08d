"""The one image-collection type every detector consumes.

An :class:`ImageSet` is an indexable collection of images with optional labels (0 = normal,
1 = anomalous), optional pixel masks and names. Images come out as ``float32`` arrays of shape
``(H, W, C)`` with values in ``[0, 1]`` and ``C`` in ``{1, 3}``; each detector's own preprocessing
turns them into the tensors it needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
    """In-memory images: uint8 / uint16 / float arrays of shape (N, H, W), (N, H, W, C) or (N, C, H, W).

    Integer arrays are scaled by their dtype's maximum; float arrays must already be in [0, 1].
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray | None = None,
        masks: np.ndarray | None = None,
        names: Sequence[str] | None = None,
        description: str = "arrays",
    ):
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4:
            raise ValueError(f"expected images of shape (N,H,W), (N,H,W,C) or (N,C,H,W), got {arr.shape}")
        if arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3, 4):
            arr = arr.transpose(0, 2, 3, 1)
        if arr.shape[-1] == 4:
            arr = arr[..., :3]
        if arr.shape[-1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels, got shape {arr.shape}")
        self.array = arr
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(arr):
            raise ValueError(f"{len(self.labels)} labels for {len(arr)} images")
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
    """Any image array (H, W) / (H, W, C) of uint8, uint16, bool or float to float32 (H, W, C) in [0, 1]."""
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
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return (a.astype(np.float32) / float(info.max)).clip(0, 1)
    return np.clip(a.astype(np.float32), 0.0, 1.0)
