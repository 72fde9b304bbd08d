"""Transformaly's two density models, as modules whose buffers are saved with the detector.

* :class:`Whitening`: PCA whitening that keeps the leading components explaining a fraction of
  the variance (``whitening_threshold``, 0.9 in the paper's code).
* :class:`Gaussian`: one Gaussian with full covariance; ``log_likelihood`` is what scikit-learn's
  ``GaussianMixture(n_components=1).score_samples`` returns (the official code's density model),
  including its ``reg_covar = 1e-6`` added to the covariance diagonal.

Fitting is done in float64 on the CPU; scoring in float64 on the densities' device: the
detector's device, except Apple MPS, which has no float64, where the densities stay on the CPU
(:func:`density_device`; the features are copied there, a few KB per image).
:class:`GaussianScorer` is the triangular-solve-free form of a Gaussian's log-likelihood that the
ONNX graph holds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

#: what sklearn's GaussianMixture adds to the covariance diagonal (its default ``reg_covar``).
REG_COVAR = 1e-6


def density_device(device: torch.device | str) -> torch.device:
    """Where float64 densities live and compute for a detector on ``device``: the CPU for Apple
    MPS (no float64 there), ``device`` itself otherwise (CPU, CUDA)."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def _as_float64(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device`` as float64; moved before the cast, so an MPS tensor is never asked to
    become float64 on the MPS device."""
    if x.device != device:
        x = x.to(device)
    return x.to(torch.float64)


class Float64Module(nn.Module):
    """A module of float64 buffers that follows ``.to(device)`` to :func:`density_device` (so
    ``.to("mps")`` keeps it on the CPU) and keeps float64 whatever dtype ``.to`` names."""

    def to(self, *args: Any, **kwargs: Any) -> Float64Module:  # type: ignore[override]
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is None:
            return self
        return super().to(density_device(device))


def count_components(eigenvalues: torch.Tensor | np.ndarray, threshold: float) -> int:
    """The number of leading components whose cumulative explained variance reaches ``threshold``.

    ``eigenvalues``: the covariance spectrum, any order. The smallest k with
    ``sum(top k) / sum(all) >= threshold`` (at least 1, at most all). The official code keeps one
    component fewer (it stops at the *index* where the ratio first exceeds the threshold)."""
    ev = torch.as_tensor(eigenvalues, dtype=torch.float64).clamp_min(0).sort(descending=True).values
    total = float(ev.sum())
    if total <= 0:
        return 1
    ratio = torch.cumsum(ev, 0) / total
    k = int(torch.searchsorted(ratio, torch.tensor([threshold], dtype=torch.float64))[0]) + 1
    return min(max(k, 1), len(ev))


class Whitening(Float64Module):
    """x (N, D) -> ((x - mean) @ components) / sqrt(variances): (N, k), unit variance per
    component on the fitting data (sample variance, N - 1, as sklearn's ``PCA(whiten=True)``)."""

    def __init__(self, dim: int = 1, n_components: int = 1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("components", torch.zeros(dim, n_components, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n_components, dtype=torch.float64))

    @property
    def n_components(self) -> int:
        return int(self.components.shape[1])

    @classmethod
    def fit(cls, x: torch.Tensor, threshold: float) -> Whitening:
        """Fit on (N, D) features; N >= 2."""
        x = x.detach().cpu().to(torch.float64)
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / max(x.shape[0] - 1, 1)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        k = count_components(evals, threshold)
        out = cls(x.shape[1], k)
        out.mean.copy_(mean)
        out.components.copy_(evecs[:, :k])
        # a zero-variance direction is only kept when the data has no variance at all
        out.scale.copy_(evals[:k].clamp_min(1e-12).rsqrt())
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float64(x, self.mean.device)
        return ((x - self.mean) @ self.components) * self.scale


class Gaussian(Float64Module):
    """A single Gaussian (maximum-likelihood mean and covariance + ``REG_COVAR`` on the diagonal),
    stored as the mean and the Cholesky factor L of the covariance (cov = L L^T)."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("cov_cholesky", torch.eye(dim, dtype=torch.float64))

    @classmethod
    def fit(cls, x: torch.Tensor, reg: float = REG_COVAR) -> Gaussian:
        """Fit on (N, d) samples."""
        x = x.detach().cpu().to(torch.float64)
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / x.shape[0] + reg * torch.eye(x.shape[1], dtype=torch.float64)
        out = cls(x.shape[1])
        out.mean.copy_(mean)
        out.cov_cholesky.copy_(torch.linalg.cholesky(cov))
        return out

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N,) log N(x; mean, cov), float64."""
        x = _as_float64(x, self.mean.device)
        d = x.shape[1]
        z = torch.linalg.solve_triangular(self.cov_cholesky, (x - self.mean).T, upper=False)
        log_det = 2.0 * torch.log(torch.diagonal(self.cov_cholesky)).sum()
        return -0.5 * (d * math.log(2 * math.pi) + log_det + (z * z).sum(0))

    forward = log_likelihood


class GaussianScorer(Float64Module):
    """A fitted :class:`Gaussian`'s log-likelihood as ``constant - |(x - mean) @ W|^2 / 2`` with
    ``W = inverse(L)^T`` computed once (float64): only subtraction, matrix product and sums, which
    ONNX has (it has no triangular solve). Equal to ``Gaussian.log_likelihood`` to float64
    rounding; input (N, d) of any float dtype, output (N,) float64."""

    def __init__(self, gaussian: Gaussian):
        super().__init__()
        chol = gaussian.cov_cholesky.detach().to("cpu", torch.float64)
        d = chol.shape[0]
        eye = torch.eye(d, dtype=torch.float64)
        self.register_buffer("mean", gaussian.mean.detach().to("cpu", torch.float64).clone())
        self.register_buffer("whiten",
                             torch.linalg.solve_triangular(chol, eye, upper=False).T.contiguous())
        log_det = 2.0 * torch.log(torch.diagonal(chol)).sum()
        self.register_buffer("constant", -0.5 * (d * math.log(2 * math.pi) + log_det))
        self.to(gaussian.mean.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (_as_float64(x, self.mean.device) - self.mean) @ self.whiten
        return self.constant - 0.5 * (z * z).sum(1)
