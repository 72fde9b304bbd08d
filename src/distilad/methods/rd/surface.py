"""RD's optional scoring statistics (issue 15): held-out map normalisation and a patch density.

Both are off by default (``map_normalization="none"``, ``patch_density="none"``); then none of
this runs and RD scores exactly as before.

* **Patch density** (``patch_density="gaussian"``, in the spirit of Transformaly's second feature
  space): the frozen teacher's own stride-8 and stride-16 features, each averaged over 3x3
  neighbours (PatchCore's local pooling), the stride-16 map bilinearly upsampled to stride 8 and
  concatenated (Lite1: 40 + 112 = 152 dims at 32x32 for 256 px). One Gaussian over every patch
  of every training normal (a single mean and covariance shared by all positions; per-position
  Gaussians would need 1,024 covariances from a few hundred images each), the covariance shrunk
  towards its mean variance, ``(1 - a) C + a tr(C)/D I`` with ``a`` = :data:`SHRINKAGE` (fixed,
  not tuned). A patch's score is its Mahalanobis distance; the (S/8)^2 grid is upsampled to the
  input size and blurred as RD's map is.
* **Map normalisation** (``map_normalization="holdout"``): per-pixel mean and std of the held-out
  normals' maps; a map is standardised pixel by pixel, ``(m - mean) / max(std, floor)``, before
  the image score. The floor is :data:`STD_FLOOR` times the spatial mean of the std, so a pixel
  where the held-out maps barely vary cannot blow up.
* **Combination** (``patch_density="gaussian"``): each map is turned into a z-score on the
  held-out normals (per pixel under ``map_normalization="holdout"``, else one mean and std over
  all their pixels) and ``rd_weight * z_rd + density_weight * z_density`` is the map (1 and 1 by
  default; ``rd_weight=0`` is the density alone, and the student is then not run).

Transformaly's ``methods/transformaly/density.py`` is not reused: it fits one Gaussian on an
(N, D) matrix held in memory and scores log-likelihoods without shrinkage; here the Gaussian is
fitted by streaming sums over up to ~500k patches and scored as a distance, so nothing is shared.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from distilad.methods.rd.model import anomaly_map, upsample_blur

#: weight of the scaled identity in the shrunk patch covariance
SHRINKAGE = 0.01
#: the per-pixel std of the held-out maps is floored at this share of its spatial mean
STD_FLOOR = 0.05


def patch_features(feats: list[torch.Tensor]) -> torch.Tensor:
    """Teacher maps [(B, c1, S/4), (B, c2, S/8), (B, c3, S/16)] -> (B, c2 + c3, S/8, S/8): levels
    2 and 3 averaged over 3x3 neighbours (edges: over the neighbours that exist), level 3
    bilinearly upsampled to level 2's grid, concatenated."""
    f2, f3 = feats[1], feats[2]
    f2 = F.avg_pool2d(f2, 3, 1, 1, count_include_pad=False)
    f3 = F.avg_pool2d(f3, 3, 1, 1, count_include_pad=False)
    f3 = F.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([f2, f3], dim=1)


class SurfaceStats(nn.Module):
    """The statistics, as buffers saved with the model (prefix ``surface``).

    ``dim``: patch feature dims D; ``size``: the model's input size S. Buffers: ``patch_mean``
    (D,), ``patch_whiten`` (D, D) with ``whiten @ whiten.T`` = the inverse shrunk covariance;
    ``rd_pixel`` / ``density_pixel`` (2, S, S): per-pixel mean and floored std of the held-out
    maps; ``rd_global`` / ``density_global`` (2,): mean and std over all their pixels."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.register_buffer("patch_mean", torch.zeros(dim))
        self.register_buffer("patch_whiten", torch.eye(dim))
        for name in ("rd", "density"):
            self.register_buffer(f"{name}_pixel", torch.stack([torch.zeros(size, size),
                                                               torch.ones(size, size)]))
            self.register_buffer(f"{name}_global", torch.tensor([0.0, 1.0]))

    @torch.no_grad()
    def fit_gaussian(self, batches: Iterable[list[torch.Tensor]]) -> int:
        """Fit the patch Gaussian on teacher feature batches (see :func:`patch_features`), by
        float64 sums; returns the number of patches."""
        total, outer, n = None, None, 0
        for feats in batches:
            x = patch_features(feats).to(torch.float64)
            x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).cpu()
            total = x.sum(0) if total is None else total + x.sum(0)
            outer = x.T @ x if outer is None else outer + x.T @ x
            n += x.shape[0]
        assert total is not None and outer is not None and n > 1
        mean = total / n
        cov = (outer - n * torch.outer(mean, mean)) / (n - 1)
        d = cov.shape[0]
        cov = (1 - SHRINKAGE) * cov + SHRINKAGE * torch.trace(cov) / d * torch.eye(
            d, dtype=torch.float64)
        # precision = L^-T L^-1 with cov = L L^T, so |(x - mean) @ L^-T|^2 is the squared distance
        chol = torch.linalg.cholesky(cov)
        whiten = torch.linalg.solve_triangular(chol, torch.eye(d, dtype=torch.float64),
                                               upper=False).T
        self.patch_mean.copy_(mean.to(self.patch_mean))
        self.patch_whiten.copy_(whiten.to(self.patch_whiten))
        return n

    def density_map(self, feats: list[torch.Tensor], size: int, sigma: float) -> torch.Tensor:
        """Mahalanobis distance of every patch -> (B, size, size), upsampled and blurred as each
        scale of RD's map is (:func:`distilad.methods.rd.model.upsample_blur`)."""
        x = patch_features(feats).permute(0, 2, 3, 1)  # (B, h, w, D)
        z = (x - self.patch_mean) @ self.patch_whiten
        dist = (z * z).sum(-1).clamp_min(0).sqrt()  # (B, h, w)
        return upsample_blur(dist, size, sigma)

    @torch.no_grad()
    def fit_maps(self, name: str, maps: torch.Tensor) -> None:
        """Held-out normals' maps (N, S, S) of ``name`` (``rd`` or ``density``) -> per-pixel and
        global mean / std (population std; the per-pixel one floored, see :data:`STD_FLOOR`)."""
        m = maps.to(torch.float64)
        mean, std = m.mean(0), m.std(0, unbiased=False)
        std = std.clamp_min(STD_FLOOR * float(std.mean()) + 1e-12)
        getattr(self, f"{name}_pixel").copy_(torch.stack([mean, std]).to(torch.float32))
        glob = torch.stack([m.mean(), m.std(unbiased=False).clamp_min(1e-12)])
        getattr(self, f"{name}_global").copy_(glob.to(torch.float32))

    def standardise(self, name: str, m: torch.Tensor, per_pixel: bool,
                    pixel_stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, S, S) map of ``name`` as a z-score on the held-out normals: per pixel or with one
        mean and std; ``pixel_stats`` (mean, std), each (B, S, S), replace the fitted per-pixel
        ones (the leave-one-out statistics of :func:`leave_one_out`)."""
        if per_pixel and pixel_stats is not None:
            return (m - pixel_stats[0]) / pixel_stats[1]
        stats = getattr(self, f"{name}_pixel" if per_pixel else f"{name}_global")
        return (m - stats[0]) / stats[1]


def leave_one_out(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and std of the held-out maps (N, S, S) *without* each image in turn: two
    (N, S, S) tensors, the std floored as in :meth:`SurfaceStats.fit_maps`. Scoring held-out
    image i against them makes its z-score out-of-sample, as a new normal's is: the threshold
    calibrated on the held-out normals (and the validation, whose normals they are) is then
    not optimistic."""
    m = maps.to(torch.float64)
    n = m.shape[0]
    total, sq = m.sum(0), (m * m).sum(0)
    mean = (total - m) / (n - 1)
    var = ((sq - m * m) / (n - 1) - mean * mean).clamp_min(0)
    floor = STD_FLOOR * float(m.std(0, unbiased=False).mean()) + 1e-12  # as fit_maps's
    return mean.to(torch.float32), var.sqrt().clamp_min(floor).to(torch.float32)


class SurfaceHead(nn.Module):
    """Teacher maps -> the scored (B, S, S) map under the surface options: RD's map (student
    run only where it is used), the density map, :func:`combine`. Shared by ``_score`` and the
    ONNX scoring net."""

    def __init__(self, stats: SurfaceStats, size: int, sigma: float, per_pixel: bool,
                 density: bool, rd_weight: float, density_weight: float):
        super().__init__()
        self.stats = stats
        self.size, self.sigma = int(size), float(sigma)
        self.per_pixel, self.density = bool(per_pixel), bool(density)
        self.rd_weight, self.density_weight = float(rd_weight), float(density_weight)

    @property
    def uses_rd(self) -> bool:
        return not self.density or self.rd_weight != 0

    def raw_maps(self, t: list[torch.Tensor], student: nn.Module
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(RD's map, the density map), each (B, S, S) or None where not used."""
        rd_map = anomaly_map(t, student(t), self.size, self.sigma) if self.uses_rd else None
        den = self.stats.density_map(t, self.size, self.sigma) if self.density else None
        return rd_map, den

    def forward(self, t: list[torch.Tensor], student: nn.Module) -> torch.Tensor:
        rd_map, den = self.raw_maps(t, student)
        return combine(self.stats, rd_map, den, self.per_pixel, self.rd_weight,
                       self.density_weight)


def combine(stats: SurfaceStats, rd_map: torch.Tensor | None, density: torch.Tensor | None,
            per_pixel: bool, rd_weight: float, density_weight: float,
            loo: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """The scored map from RD's map and the density map (either may be None when not used):
    RD's map alone is returned raw (``per_pixel=False``) or standardised per pixel; with a
    density map, ``rd_weight * z_rd + density_weight * z_density`` (z on the held-out normals,
    per pixel or global as ``per_pixel``). ``loo``: per-image per-pixel statistics by map name
    (held-out images, :func:`leave_one_out`). Returns (B, S, S)."""
    loo = loo or {}
    if density is None:
        assert rd_map is not None
        return stats.standardise("rd", rd_map, True, loo.get("rd")) if per_pixel else rd_map
    out = density_weight * stats.standardise("density", density, per_pixel, loo.get("density"))
    if rd_map is not None and rd_weight != 0:
        out = out + rd_weight * stats.standardise("rd", rd_map, per_pixel, loo.get("rd"))
    return out
