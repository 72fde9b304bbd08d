"""Calibration from held-out normal images only: no labelled anomalies are needed.

The threshold is chosen so that at most ``target_fpr`` of the held-out normal images score above
it: with n held-out scores it is the (n - k)-th smallest, k = floor(target_fpr * n) images above.
Scores are normalised to 0..1 by ``0.5 * (s - median) / (threshold - median)``, clipped: the
held-out median maps to 0, the threshold to 0.5. Anomaly maps get a fixed colour scale on the
same principle: ``vmin`` is the median held-out pixel value and ``vmax = 2 * threshold - vmin``,
so the threshold sits mid-scale.

Too few held-out images: n held-out scores can only resolve false-positive rates in steps of
1/n, so with n < 1/target_fpr (k = 0) the threshold is simply the highest held-out score and its
false-positive rate on new normal images is not backed by the data (about 1/(n+1) of them score
above the maximum of n others). This is then done anyway, with a :class:`CalibrationWarning`
giving n, target_fpr and the smallest rate the data can support (1/n).

Other ways to set the threshold (:meth:`distilad.Detector.calibrate`, ``det.threshold = t``):
``strategy="f1_max"`` picks the threshold with the best F1 on labelled validation images
(normal and anomalous); a threshold set by hand is kept as given. Either way the normalisation
and the map scale keep the threshold at 0.5 / mid-scale.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace

import numpy as np

from distilad.errors import CalibrationWarning, DistiladError

#: how :meth:`distilad.Detector.calibrate` may choose a threshold.
CALIBRATION_STRATEGIES = ("target_fpr", "f1_max")


@dataclass
class Calibration:
    """Threshold and normalisation learned from normal scores (all in raw score units).

    ``strategy``: "target_fpr" (held-out normals), "f1_max" (labelled images) or "manual"
    (threshold set by hand). ``holdout_fpr``: fraction of the normal calibration images above the
    threshold (None after a manual change). ``f1``: the F1 reached on the labelled images
    ("f1_max" only; ``target_fpr`` then holds the false-positive rate reached on their normals).
    """

    threshold: float
    median: float
    target_fpr: float
    n_holdout: int
    map_vmin: float | None = None
    map_vmax: float | None = None
    holdout_fpr: float | None = 0.0
    strategy: str = "target_fpr"
    f1: float | None = None

    @classmethod
    def from_holdout(
        cls, scores: np.ndarray, maps: np.ndarray | list[np.ndarray] | None = None,
        target_fpr: float = 0.01,
    ) -> Calibration:
        """Fit on held-out normal image scores (N,) and, optionally, their maps (N, H, W)."""
        s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
        if s.size == 0:
            raise DistiladError("calibration needs at least one held-out normal image")
        if not 0.0 <= target_fpr < 1.0:
            raise DistiladError(f"target_fpr must be in [0, 1), got {target_fpr}")
        n = s.size
        k = int(np.floor(target_fpr * n))  # held-out images allowed above the threshold
        if k == 0 and target_fpr > 0:
            warnings.warn(
                f"calibration: {n} held-out normal images cannot back target_fpr={target_fpr:g} "
                f"(the smallest false-positive rate they can show is 1/{n} = {1 / n:.3g}); the "
                f"threshold is their highest score, and about 1/{n + 1} of new normal images "
                f"will score above it; hold out at least {math.ceil(1 / target_fpr)} (more normal "
                f"images or a larger holdout_fraction)",
                CalibrationWarning, stacklevel=2)
        threshold = float(s[n - 1 - k])
        median = float(np.median(s))
        if threshold <= median:  # degenerate (constant scores): keep the scale non-empty
            threshold = median + max(abs(median) * 1e-3, 1e-6)
        vmin, vmax = _map_scale(maps, threshold)
        return cls(threshold=threshold, median=median, target_fpr=float(target_fpr), n_holdout=n,
                   map_vmin=vmin, map_vmax=vmax, holdout_fpr=float(np.mean(s > threshold)))

    @classmethod
    def from_labelled(
        cls, scores: np.ndarray, labels: np.ndarray,
        maps: np.ndarray | list[np.ndarray] | None = None,
    ) -> Calibration:
        """The threshold of best F1 on labelled scores (N,) (labels 1 = anomalous), placed mid-way
        between the lowest score it flags and the next lower score; the median and map scale come
        from the normal images (label 0) among them."""
        from distilad.metrics import f1_max

        s = np.asarray(scores, dtype=np.float64).ravel()
        y = np.asarray(labels).ravel()
        if s.shape != y.shape:
            raise DistiladError(f"calibration: {y.size} labels for {s.size} scores")
        if not np.all((y == 0) | (y == 1)):
            raise DistiladError("calibration: labels must be 0 (normal) or 1 (anomalous)")
        normal = s[y == 0]
        if normal.size == 0 or normal.size == s.size:
            raise DistiladError("calibrate(strategy='f1_max') needs normal (0) and anomalous (1) "
                                f"images; got {normal.size} normal of {s.size}")
        f1, flagged_from = f1_max(y, s)  # f1_max flags score >= flagged_from
        below = s[s < flagged_from]
        threshold = (0.5 * (flagged_from + below.max()) if below.size
                     else flagged_from - max(abs(flagged_from) * 1e-6, 1e-12))
        median = float(np.median(normal))
        if threshold <= median:  # most normals flagged: start the scale at the lowest normal
            median = min(float(normal.min()), threshold - max(abs(threshold) * 1e-3, 1e-6))
        normal_maps = None
        if maps is not None:
            normal_maps = [m for m, lab in zip(maps, y, strict=True) if lab == 0]
        vmin, vmax = _map_scale(normal_maps, threshold)
        return cls(threshold=float(threshold), median=median, target_fpr=float(np.mean(
            normal > threshold)), n_holdout=int(normal.size), map_vmin=vmin, map_vmax=vmax,
            holdout_fpr=float(np.mean(normal > threshold)), strategy="f1_max", f1=float(f1))

    def with_threshold(self, value: float) -> Calibration:
        """A copy with the threshold set by hand; the median stays, the map scale follows."""
        try:
            t = float(value)
        except (TypeError, ValueError):
            raise DistiladError(f"threshold must be a number, got {value!r}") from None
        if not math.isfinite(t):
            raise DistiladError(f"threshold must be finite, got {value!r}")
        if t <= self.median:
            raise DistiladError(
                f"threshold {t:g} is not above the median normal score {self.median:g}: more "
                f"than half of normal images would be flagged, and the normalised scale (median "
                f"0, threshold 0.5) would invert; choose a threshold > {self.median:g}")
        vmax = self.map_vmax
        if self.map_vmin is not None and t > self.map_vmin:
            vmax = 2 * t - self.map_vmin
        return replace(self, threshold=t, map_vmax=vmax, holdout_fpr=None, strategy="manual",
                       f1=None)

    def normalize(self, scores: np.ndarray) -> np.ndarray:
        """Raw scores -> 0..1, threshold at 0.5."""
        s = np.asarray(scores, dtype=np.float64)
        return np.clip(0.5 * (s - self.median) / (self.threshold - self.median), 0.0, 1.0)

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """1 (anomalous) where the raw score is above the threshold, else 0."""
        return (np.asarray(scores) > self.threshold).astype(np.int64)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(**d)


def _map_scale(maps: np.ndarray | list[np.ndarray] | None, threshold: float
               ) -> tuple[float | None, float | None]:
    """(vmin, vmax) of the map colour scale: median normal pixel, threshold mid-way."""
    if maps is None or len(maps) == 0:
        return None, None
    flat = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
    vmin = float(np.median(flat))
    vmax = float(2 * threshold - vmin) if threshold > vmin else float(flat.max())
    return vmin, vmax
