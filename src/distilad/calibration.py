"""Calibration from held-out normal images only: no labelled anomalies are needed.

The threshold is chosen so that at most ``target_fpr`` of the held-out normal images score above
it (with few held-out images and a 1 % target this is their maximum). Scores are normalised to
0..1 by ``0.5 * (s - median) / (threshold - median)``, clipped: the held-out median maps to 0, the
threshold to 0.5. Anomaly maps get a fixed colour scale on the same principle: ``vmin`` is the
median held-out pixel value and ``vmax = 2 * threshold - vmin``, so the threshold sits mid-scale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Calibration:
    """Threshold and normalisation learned from held-out normal scores (all in raw score units)."""

    threshold: float
    median: float
    target_fpr: float
    n_holdout: int
    map_vmin: float | None = None
    map_vmax: float | None = None
    holdout_fpr: float = 0.0

    @classmethod
    def from_holdout(
        cls, scores: np.ndarray, maps: np.ndarray | list[np.ndarray] | None = None,
        target_fpr: float = 0.01,
    ) -> Calibration:
        """Fit on held-out normal image scores (N,) and, optionally, their maps (N, H, W)."""
        s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
        if s.size == 0:
            raise ValueError("calibration needs at least one held-out normal image")
        if not 0.0 <= target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
        n = s.size
        k = int(np.floor(target_fpr * n))  # held-out images allowed above the threshold
        threshold = float(s[n - 1 - k])
        median = float(np.median(s))
        if threshold <= median:  # degenerate (constant scores): keep the scale non-empty
            threshold = median + max(abs(median) * 1e-3, 1e-6)
        vmin = vmax = None
        if maps is not None:
            flat = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
            vmin = float(np.median(flat))
            vmax = float(2 * threshold - vmin) if threshold > vmin else float(flat.max())
        return cls(threshold=threshold, median=median, target_fpr=float(target_fpr), n_holdout=n,
                   map_vmin=vmin, map_vmax=vmax, holdout_fpr=float(np.mean(s > threshold)))

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
