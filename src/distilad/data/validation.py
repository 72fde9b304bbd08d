"""Validation data made from normal images only: synthetic defects with exact masks.

Industrial data (an MVTec-style ``train/good`` folder) has no anomalous training images, so the
validation split is the held-out normal images against *synthetic defects made from them*: one
defect per held-out image, of four kinds, cycled in this order so that every kind is represented
as soon as there are four images (image ``i`` gets kind ``KINDS[i % 4]``):

``cutpaste``
    CutPaste (Li et al., CVPR 2021): a rectangle of 2-15 % of the image area (aspect ratio
    0.3-3.3) is cut from one place of the same image, rotated by a multiple of 90 degrees,
    maybe mirrored, colour-jittered (gain 0.8-1.2 per channel, offset +-0.1) and pasted at another
    place.
``scar``
    A thin long line (length 15-40 %, width 1-4 % of the shorter image side, at least 1 px; any
    angle), filled either with a solid random colour (a drawn line / scratch) or with the
    jittered pixels of another place of the image (CutPaste-scar).
``noise``
    Local noise: a round Gaussian blob (sigma 3-10 % of the shorter side, cut off at 2.5 sigma)
    of pixel noise, ``image + amplitude * weight * N(0, 1)`` per pixel and channel, amplitude
    0.2-0.5.
``blotch``
    A colour blotch: an elliptic Gaussian blob (sigmas 3-12 % of the shorter side, any angle,
    cut off at 2.5 sigma) blending the image towards a colour that differs from the local mean
    by at least 0.3, with opacity 0.6-1.

Sizes are fractions of the image size, so the same code makes comparable defects on 32 px and
1024 px images; gray images (C = 1) get gray defects. A defect that changes too little (fewer
than max(1, 0.05 %) of the pixels by more than 0.02, e.g. a patch pasted on a flat background)
is drawn again (at most 8 times), then replaced by a full-opacity blotch.

Randomness: image ``i`` draws from ``numpy.random.default_rng([seed, i])``, so a defect depends
on the seed and the image only, and the set is built lazily (nothing is held in memory beyond the
image in use). Masks are exact: ``mask(i)`` is True precisely where the defective image differs
from the normal one (in any channel), so pixel metrics are defined on synthetic defects too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from distilad.data.base import ImageSet

KINDS: tuple[str, ...] = ("cutpaste", "scar", "noise", "blotch")
#: bump when the defects change (it is part of the feature-cache key)
DEFECT_VERSION = 1
_MIN_CHANGE = 0.02  # a pixel counts as visibly changed above this (images are in [0, 1])
_MIN_FRACTION = 0.0005  # ... and a defect needs this fraction of the image so changed
_ATTEMPTS = 8


def synthetic_defects(normals: ImageSet, seed: int) -> ImageSet:
    """One seeded synthetic defect per image of ``normals`` (see the module doc).

    Returns an ImageSet of the same length, image shapes and channels (float32 (H, W, C) in
    [0, 1]), labels all 1, bool masks (H, W) of the changed pixels, names ``<name>#<kind>``.
    """
    return SyntheticDefectSet(normals, seed)


def validation_set(normals: ImageSet, anomalies: ImageSet | None, seed: int) -> ImageSet:
    """``normals`` (label 0) followed by ``anomalies`` (label 1, whatever labels they carry);
    with ``anomalies=None``, the synthetic defects of ``normals`` made with ``seed``."""
    if anomalies is None:
        anomalies = synthetic_defects(normals, seed)
    return LabelledConcat([(normals, 0), (anomalies, 1)])


class SyntheticDefectSet(ImageSet):
    """Lazily made synthetic defects of ``normals`` (see the module doc)."""

    #: made anew for every run: not worth a teacher-feature cache entry
    reuse_features = False

    def __init__(self, normals: ImageSet, seed: int):
        self.normals = normals
        self.seed = int(seed)
        n = len(normals)
        self.kinds = [KINDS[i % len(KINDS)] for i in range(n)]
        self.labels = np.ones(n, dtype=np.int64)
        self.has_masks = True
        self.names = [f"{name}#{kind}" for name, kind in zip(normals.names, self.kinds,
                                                             strict=True)]
        self.description = f"{normals.description} + synthetic defects (seed {self.seed})"
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.normals)

    def _make(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._last is None or self._last[0] != i:
            rng = np.random.default_rng([self.seed, i])
            image, mask = make_defect(self.normals.image(i), self.kinds[i], rng)
            self._last = (i, image, mask)
        return self._last[1], self._last[2]

    def image(self, i: int) -> np.ndarray:
        return self._make(i)[0]

    def mask(self, i: int) -> np.ndarray:
        return self._make(i)[1]

    def image_shape(self, i: int) -> tuple[int, int]:
        return self.normals.image_shape(i)

    @property
    def content_fingerprint(self) -> str:
        return f"synthetic-v{DEFECT_VERSION}:{self.seed}:{self.normals.content_fingerprint}"

    @property
    def fingerprint(self) -> str:
        return self.content_fingerprint


class LabelledConcat(ImageSet):
    """Several ImageSets one after another, each with one label for all its images."""

    def __init__(self, parts: list[tuple[ImageSet, int]]):
        self.parts = [p for p, _ in parts]
        self.labels = np.concatenate([np.full(len(p), lab, dtype=np.int64) for p, lab in parts])
        self.names = [n for p in self.parts for n in p.names]
        self.has_masks = any(p.has_masks for p in self.parts)
        self.description = " | ".join(p.description for p in self.parts)
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.reuse_features = all(getattr(p, "reuse_features", True) for p in self.parts)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _locate(self, i: int) -> tuple[ImageSet, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.parts[k], i - int(self._starts[k])

    def image(self, i: int) -> np.ndarray:
        part, j = self._locate(i)
        return part.image(j)

    def image_shape(self, i: int) -> tuple[int, int]:
        part, j = self._locate(i)
        return part.image_shape(j)

    def mask(self, i: int) -> np.ndarray | None:
        part, j = self._locate(i)
        return part.mask(j) if part.has_masks else None

    @property
    def content_fingerprint(self) -> str:
        return "concat:" + "+".join(p.content_fingerprint for p in self.parts)

    @property
    def fingerprint(self) -> str:
        return "concat:" + "+".join(p.fingerprint for p in self.parts)


# --- the defects ---------------------------------------------------------------------------------
def make_defect(image: np.ndarray, kind: str, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """A defective copy of ``image`` (float32 (H, W, C) in [0, 1]) and its bool (H, W) mask of
    the changed pixels. ``kind`` is one of :data:`KINDS`."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown defect kind {kind!r}; one of {', '.join(KINDS)}")
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape[:2]
    need = max(1, int(round(_MIN_FRACTION * h * w)))
    for _ in range(_ATTEMPTS):
        out = _MAKERS[kind](img, rng)
        if int((np.abs(out - img).max(axis=-1) > _MIN_CHANGE).sum()) >= need:
            break
    else:
        out = _blotch(img, rng, opacity=1.0)
    mask = np.any(out != img, axis=-1)
    return out, mask


def _cutpaste(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w, c = img.shape
    area = rng.uniform(0.02, 0.15) * h * w
    aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
    ph = int(np.clip(round(math.sqrt(area * aspect)), 1, max(1, h // 2)))
    pw = int(np.clip(round(math.sqrt(area / aspect)), 1, max(1, w // 2)))
    sy, sx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    patch = img[sy:sy + ph, sx:sx + pw]
    k = int(rng.integers(4))
    if k % 2 and (pw > h or ph > w):  # a quarter turn would not fit
        k = 2
    patch = np.rot90(patch, k)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = _jitter(patch, rng)
    ph, pw = patch.shape[:2]
    dy, dx = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
    out = img.copy()
    out[dy:dy + ph, dx:dx + pw] = patch
    return out


def _scar(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w, c = img.shape
    side = min(h, w)
    length = rng.uniform(0.15, 0.4) * side
    width = max(1.0, rng.uniform(0.01, 0.04) * side)
    angle = rng.uniform(0.0, math.pi)
    cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
    reach = length / 2 + width
    (y0, y1, x0, x1), yy, xx = _box(h, w, cy, cx, reach)
    u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    region = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    region[int(round(cy)) - y0, int(round(cx)) - x0] = True  # never empty on tiny images
    out = img.copy()
    box = out[y0:y1, x0:x1]
    if rng.random() < 0.5:  # a drawn line of one colour
        fill = np.broadcast_to(rng.uniform(0, 1, size=c).astype(np.float32), box.shape)
    else:  # the pixels of another place, jittered
        sy, sx = int(rng.integers(h // 4, h - h // 4 + 1)), int(rng.integers(w // 4, w - w // 4 + 1))
        src = np.roll(img, (sy, sx), axis=(0, 1))[y0:y1, x0:x1]
        fill = _jitter(src, rng)
    box[region] = fill[region]
    return out


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w, c = img.shape
    sigma = max(1.0, rng.uniform(0.03, 0.10) * min(h, w))
    cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
    (y0, y1, x0, x1), yy, xx = _box(h, w, cy, cx, 2.5 * sigma)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / sigma**2
    weight = np.where(r2 <= 2.5**2, np.exp(-r2 / 2), 0.0).astype(np.float32)
    amp = rng.uniform(0.2, 0.5)
    noise = rng.standard_normal((y1 - y0, x1 - x0, c)).astype(np.float32)
    out = img.copy()
    out[y0:y1, x0:x1] = np.clip(img[y0:y1, x0:x1] + amp * weight[..., None] * noise, 0, 1)
    return out


def _blotch(img: np.ndarray, rng: np.random.Generator, opacity: float | None = None
            ) -> np.ndarray:
    h, w, c = img.shape
    side = min(h, w)
    sa, sb = (max(1.0, rng.uniform(0.03, 0.12) * side) for _ in range(2))
    angle = rng.uniform(0.0, math.pi)
    cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
    (y0, y1, x0, x1), yy, xx = _box(h, w, cy, cx, 2.5 * max(sa, sb))
    u = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    v = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    r2 = (u / sa) ** 2 + (v / sb) ** 2
    weight = np.where(r2 <= 2.5**2, np.exp(-r2 / 2), 0.0).astype(np.float32)
    box = img[y0:y1, x0:x1]
    local = box.reshape(-1, c).mean(axis=0)
    colour = rng.uniform(0, 1, size=c).astype(np.float32)
    if np.abs(colour - local).max() < 0.3:  # too close to what is there: the opposite end
        colour = np.where(local > 0.5, 0.0, 1.0).astype(np.float32)
    alpha = rng.uniform(0.6, 1.0) if opacity is None else opacity
    wa = (alpha * weight)[..., None]
    out = img.copy()
    out[y0:y1, x0:x1] = box * (1 - wa) + colour * wa
    return out


def _jitter(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter: gain 0.8-1.2 per channel and one offset in +-0.1, clipped to [0, 1]."""
    c = pixels.shape[-1]
    gain = rng.uniform(0.8, 1.2, size=c).astype(np.float32)
    offset = np.float32(rng.uniform(-0.1, 0.1))
    return np.clip(pixels * gain + offset, 0, 1).astype(np.float32)


def _box(h: int, w: int, cy: float, cx: float, reach: float
         ) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """The image box within ``reach`` of (cy, cx) and its pixel coordinates (float grids)."""
    y0, y1 = max(0, int(math.floor(cy - reach))), min(h, int(math.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(math.floor(cx - reach))), min(w, int(math.ceil(cx + reach)) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return (y0, y1, x0, x1), yy, xx


_MAKERS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "cutpaste": _cutpaste, "scar": _scar, "noise": _noise, "blotch": _blotch}
