"""AdaptiveMix (Liu, Zhang et al., CVPR 2023; official code WentianZhang-ML/AdaptiveMix): shrink
the region that training data occupy in a network's feature space by pulling the features of a
mixture of two training images toward the mixture of their features.

For a batch ``x_a`` (B, ...) and a network ``f``:

- ``lambda ~ Beta(alpha, alpha)`` (alpha = 1: uniform on [0, 1]); the partner ``x_b`` is a random
  permutation of the batch; ``x_mix = lambda x_a + (1 - lambda) x_b``.
- target ``z = lambda f(x_a) + (1 - lambda) f(x_b) + N(0, sigma^2)``, sigma = 0.05, detached (no
  gradient flows through it: the network is trained only through ``f(x_mix)``).
- loss, GAN form (official ``generation/training/loss.py``): ``-cos(f(x_mix), z)`` per sample on
  the flattened features, averaged over the batch (minimum -1); classifier / student form
  (official ``classification/models.py``): ``mse(f(x_mix), z)`` where ``f`` is an L2-normalised
  embedding (minimum 0). The normalisation belongs to ``f`` (the caller normalises, e.g. with
  :func:`l2_normalise`, before the features reach these functions), so both forms are exactly at
  their minimum when ``f`` is affine and sigma = 0.
- distillation students (:func:`student_term`): the student's features of ``x_mix`` against the
  mixture of the *teacher's* features of ``x_a`` and ``x_b`` (RD: per-position unit vectors;
  Transformaly: raw features).

Where each method plugs it in, and why: ``methods/README-adaptivemix.md``.

One lambda per batch by default, as the official code draws it (``np.random.beta`` once per call,
for the GAN and the classifier); ``per_sample=True`` draws one per image instead (not used by any
method). The weight of the term is 1.0 by default, as in the official code (plainly summed with
the adversarial / cross-entropy loss); the paper's own weight is unknown (its equations were not
reachable; ../shared/papers/adaptivemix.md).

Every random draw (partner, lambda, noise) comes from the ``torch.Generator`` held by
:class:`AdaptiveMix`, so a seeded fit is reproducible and the global random state is untouched.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

#: Official defaults (README ``--noise_std=0.05``; ``alpha=1.0`` in ``adaptive_mix``)
DEFAULT_ALPHA = 1.0
DEFAULT_SIGMA = 0.05
DEFAULT_WEIGHT = 1.0


class Mix(NamedTuple):
    """A mixed batch: ``x`` = lam * x_a + (1 - lam) * x_a[perm]; ``lam`` (B,) in [0, 1] (all
    equal when drawn per batch); ``perm`` (B,) the partner of each sample."""

    x: torch.Tensor
    lam: torch.Tensor
    perm: torch.Tensor


def _expand(lam: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against ``like`` (B, ...)."""
    return lam.reshape(-1, *([1] * (like.dim() - 1)))


def l2_normalise(f: torch.Tensor) -> torch.Tensor:
    """Each sample's flattened features scaled to unit L2 norm, shape kept (B, ...)."""
    return F.normalize(f.flatten(1), dim=1).view_as(f)


def cosine_shrinkage(f_mix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """GAN form: ``-cos(f_mix, target)`` per sample on flattened features, mean over the batch
    (a scalar in [-1, 1]; -1 when every f_mix points along its target)."""
    return -F.cosine_similarity(f_mix.flatten(1), target.flatten(1), dim=1).mean()


def mse_shrinkage(f_mix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Classifier / student form: mean squared difference (a scalar >= 0)."""
    return F.mse_loss(f_mix, target)


@dataclass
class AdaptiveMix:
    """The mixing rule and its random source.

    ``weight`` multiplies the term where a method adds it (>= 0); ``alpha`` the Beta parameter
    (> 0); ``sigma`` the std of the noise added to the target (>= 0); ``per_sample``: one lambda
    per image instead of one per batch; ``generator``: the source of every draw (pass a seeded
    one; its device is where the draws are made).
    """

    weight: float = DEFAULT_WEIGHT
    alpha: float = DEFAULT_ALPHA
    sigma: float = DEFAULT_SIGMA
    per_sample: bool = False
    generator: torch.Generator = field(default_factory=torch.Generator)

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.sigma >= 0 and self.weight >= 0):
            raise ValueError(f"AdaptiveMix needs alpha > 0, sigma >= 0, weight >= 0; got "
                             f"alpha={self.alpha}, sigma={self.sigma}, weight={self.weight}")

    @classmethod
    def seeded(cls, seed: int, device: torch.device | str = "cpu", **kwargs: Any
               ) -> AdaptiveMix:
        """An AdaptiveMix whose draws come from a new generator on ``device`` seeded with
        ``seed``."""
        return cls(generator=torch.Generator(device=device).manual_seed(int(seed)), **kwargs)

    def info(self) -> dict[str, Any]:
        """What a fit records of the settings."""
        return {"weight": float(self.weight), "alpha": float(self.alpha),
                "sigma": float(self.sigma),
                "lambda": "per sample" if self.per_sample else "per batch"}

    def draw_lambda(self, n: int) -> torch.Tensor:
        """``n`` values of lambda (float32, on the generator's device): n independent draws from
        Beta(alpha, alpha) when ``per_sample``, else one draw repeated."""
        # torch's Beta sampler takes no generator: the draw is made by numpy from a seed that
        # the torch generator supplies (still one reproducible stream)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator,
                                 device=self.generator.device).item())
        k = n if self.per_sample else 1
        lam = np.random.default_rng(seed).beta(self.alpha, self.alpha, size=k)
        return torch.as_tensor(lam, dtype=torch.float32).expand(n).to(self.generator.device)

    def mix(self, x: torch.Tensor) -> Mix:
        """Mix batch ``x`` (B, ...) with a random permutation of itself."""
        n = x.shape[0]
        perm = torch.randperm(n, generator=self.generator, device=self.generator.device)
        lam = self.draw_lambda(n).to(x.device)
        perm = perm.to(x.device)
        lam_x = _expand(lam, x).to(x.dtype)
        return Mix(lam_x * x + (1 - lam_x) * x[perm], lam, perm)

    def target(self, f: torch.Tensor, mix: Mix) -> torch.Tensor:
        """Detached target ``lam f + (1 - lam) f[perm] + N(0, sigma^2)`` from the features ``f``
        (B, ...) of the unmixed batch (``f`` = the network's own features, or a teacher's)."""
        with torch.no_grad():
            lam = _expand(mix.lam, f).to(f.dtype)
            z = lam * f + (1 - lam) * f[mix.perm]
            if self.sigma > 0:
                noise = torch.randn(f.shape, generator=self.generator,
                                    device=self.generator.device, dtype=f.dtype)
                z = z + self.sigma * noise.to(f.device)
        return z.detach()

    def cosine_loss(self, features: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    f_x: torch.Tensor) -> torch.Tensor:
        """GAN form on batch ``x`` whose features ``f_x = features(x)`` are already computed:
        ``-cos(features(x_mix), target)`` (unweighted; gradients reach the network only through
        ``features(x_mix)``, and ``x`` itself through ``x_mix``)."""
        m = self.mix(x)
        z = self.target(f_x, m)
        return cosine_shrinkage(features(m.x), z)

    def mse_loss(self, student: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
        """Student form on batch ``x``: ``mse(student(x_mix), mix of targets + noise)``, with
        ``targets`` (B, ...) the (normalised) embeddings of ``x`` the student must follow, e.g. a
        teacher's. Unweighted."""
        m = self.mix(x)
        z = self.target(targets, m)
        return mse_shrinkage(student(m.x), z)


def unit_positions(f: torch.Tensor) -> torch.Tensor:
    """Each position's feature vector scaled to unit L2 norm: maps (B, C, H, W) over the channels
    (dim 1), tokens (B, N, C) over the last dim. The embeddings of the students' form (RD,
    Transformaly): one C-dimensional embedding per position, like the official classifier's
    640-dimensional one, so that the target's N(0, 0.05^2) noise has the official size relative
    to a unit vector."""
    return F.normalize(f, dim=1 if f.ndim == 4 else -1)


#: What the students' form (:func:`student_term`) takes as an embedding, as fits record it
STUDENT_EMBEDDING = {True: "each position's channel vector, L2-normalised",
                     False: "the features as they are (not normalised)"}


def student_term(mixer: AdaptiveMix, mix: Mix, student_mixed: list[torch.Tensor],
                 teacher_targets: list[torch.Tensor], normalise: bool = True
                 ) -> list[torch.Tensor]:
    """Student form, one loss per feature level: ``mse(e(S(x_mix)), lam e(T(x_a)) +
    (1 - lam) e(T(x_b)) + noise)`` with ``S(x_mix)`` the student's features of the mixed batch
    ``mix``, ``T`` the teacher's targets for the unmixed batch and ``e`` the embedding:
    :func:`unit_positions` when ``normalise`` (the official classifier's form), else the
    features themselves. Unweighted; the caller reduces over levels as the method's own loss
    does."""
    def e(f: torch.Tensor) -> torch.Tensor:
        return unit_positions(f) if normalise else f

    return [mse_shrinkage(e(s), mixer.target(e(t), mix))
            for s, t in zip(student_mixed, teacher_targets, strict=True)]


class TrainingImages:
    """The training images at ``size`` px (C = ``channels``) by index, (B, C, S, S) float32 in
    [0, 1] on the CPU, for mixing: all loaded once when they take at most ``max_bytes``, else
    loaded per batch (the same tensors ``stack_images`` gives the teacher)."""

    def __init__(self, images: Any, size: int, channels: int = 3, max_bytes: float = 1e9):
        from distilad.data.transforms import stack_images

        self._stack = stack_images
        self.images, self.size, self.channels = images, int(size), int(channels)
        per_image = 4 * self.channels * self.size ** 2
        self.all = (stack_images(images, range(len(images)), self.size, self.channels)
                    if len(images) * per_image <= max_bytes else None)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.all is not None:
            return self.all[idx]
        return self._stack(self.images, idx.tolist(), self.size, self.channels)


class EpochMeans:
    """Per-epoch mean of a value logged once per training batch (weighted by batch size), for
    epochs of ``batches_per_epoch`` batches: the unweighted AdaptiveMix term of a fit."""

    def __init__(self, batches_per_epoch: int):
        self.per_epoch = max(int(batches_per_epoch), 1)
        self.values: list[tuple[float, int]] = []

    def add(self, value: float, n: int) -> None:
        self.values.append((float(value), int(n)))

    def history(self) -> list[float]:
        out = []
        for a in range(0, len(self.values), self.per_epoch):
            chunk = self.values[a:a + self.per_epoch]
            out.append(sum(v * n for v, n in chunk) / max(sum(n for _, n in chunk), 1))
        return out

    def split(self, history: list[float], mixer: AdaptiveMix, normalise: bool, digits: int
              ) -> tuple[list[float], dict[str, Any]]:
        """``history`` (per-epoch mean of the method's loss + weight x term) split into the
        method's own loss per epoch and the ``fit_info["adaptivemix"]`` record (the unweighted
        term per epoch, rounded to ``digits``, and the embedding used)."""
        terms = self.history()
        own = [h - mixer.weight * a for h, a in zip(history, terms, strict=True)]
        return own, {**mixer.info(), "embedding": STUDENT_EMBEDDING[normalise],
                     "loss_history": [round(v, digits) for v in terms]}


#: The arguments a method declares to switch AdaptiveMix on (see methods/README-adaptivemix.md)
PARAM_DEFAULTS: dict[str, Any] = {"adaptivemix": False, "adaptivemix_weight": DEFAULT_WEIGHT}


def param_specs() -> dict[str, Any]:
    """Declarations of :data:`PARAM_DEFAULTS` (``adaptivemix`` true/false, weight >= 0)."""
    from distilad.params import Bool, Float

    return {"adaptivemix": Bool(), "adaptivemix_weight": Float(0.0)}


def from_params(params: dict[str, Any], seed: int, phase: str,
                device: torch.device | str = "cpu") -> AdaptiveMix | None:
    """The AdaptiveMix of a method's arguments (None when ``adaptivemix`` is off), its draws
    seeded by the fit's ``seed`` and the training ``phase`` (each phase its own stream, apart
    from the data order's)."""
    if not params.get("adaptivemix"):
        return None
    stream = (int(seed) * 1_000_003 + zlib.crc32(f"adaptivemix {phase}".encode())) % 2**63
    return AdaptiveMix.seeded(stream, device, weight=float(params["adaptivemix_weight"]))
