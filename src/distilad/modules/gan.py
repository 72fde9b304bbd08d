"""Training pieces shared by the encoder-decoder-encoder GANs (EDE-GAN, P-KDGAN's teacher and
student): DCGAN initialisation, GANomaly's losses and update, the collapsed-discriminator reset,
images as tanh-range tensors, and the latent / reconstruction scores.

A *GAN* here is any module with a ``generator`` (x -> (x_hat, z, z_hat)) and a
``discriminator`` (x -> (logit (B,), feature map (B, C, h, w))); images are (B, C, S, S) in
[-1, 1], latent vectors (B, nz, 1, 1).

One update computes each discriminator pass once per batch: the real batch's features (target
of the generator's feature matching) and logits (the discriminator's loss) come from one pass,
and so do the reconstructions' features and logits. Both nets' gradients are taken from the
weights of the start of the step, which is what GANomaly's order (generator step, then a
discriminator step on the same batch) computes too, since the generator step leaves the
discriminator's weights unchanged.

AdaptiveMix (``distilad.modules.adaptivemix``; off unless an ``AdaptiveMix`` is passed) adds its
``-cos`` shrinkage terms on mixtures of the real batch and of the reconstructions to both losses
(:func:`gan_losses`; methods/README-adaptivemix.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from distilad.data import ImageSet
from distilad.data.transforms import stack_images
from distilad.metrics import auroc
from distilad.modules.adaptivemix import AdaptiveMix

#: DCGAN's weight rule (Radford et al. 2016; GANomaly's ``weights_init``)
DCGAN_STD = 0.02
#: GANomaly re-initialises a discriminator whose loss falls below this (it has "won")
COLLAPSED_D_LOSS = 1e-5

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x_hat, z, z_hat


class GAN(Protocol):
    generator: nn.Module
    discriminator: nn.Module


@torch.no_grad()
def dcgan_init_(module: nn.Module) -> nn.Module:
    """DCGAN initialisation of every layer of ``module``, in place; returns it.

    (Transposed) convolutions: weight ~ N(0, 0.02), bias 0; BatchNorm: weight ~ N(1, 0.02),
    bias 0 (running statistics untouched, as in GANomaly). Other layers keep their values.
    Draws from torch's global generator, so a seeded fit is reproducible.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.normal_(m.weight, 0.0, DCGAN_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, DCGAN_STD)
            nn.init.zeros_(m.bias)
    return module


def reset_if_collapsed(discriminator: nn.Module, loss_d: float) -> bool:
    """GANomaly's rule: a discriminator whose loss fell below 1e-5 is re-initialised (same DCGAN
    rule as at the start; its optimiser state is kept, as in GANomaly). True when it was."""
    if loss_d < COLLAPSED_D_LOSS:
        dcgan_init_(discriminator)
        return True
    return False


class GANLosses(NamedTuple):
    """Scalar losses of one batch and the generator's outputs (x_hat, z, z_hat).

    ``generator`` / ``discriminator``: what each network minimises. ``ganomaly_g`` /
    ``ganomaly_d``: GANomaly's part of them (the same tensors when AdaptiveMix is off; the
    collapsed-discriminator rule watches ``ganomaly_d``). ``shrinkage``: AdaptiveMix's
    unweighted ``-cos`` terms on (real, fake) mixtures, None when off."""

    generator: torch.Tensor
    discriminator: torch.Tensor
    outputs: Outputs
    ganomaly_g: torch.Tensor
    ganomaly_d: torch.Tensor
    shrinkage: tuple[torch.Tensor, torch.Tensor] | None = None


def loss_weights(params: Mapping[str, Any]) -> dict[str, float]:
    """The three generator loss weights of a parameter mapping."""
    return {k: float(params[k]) for k in ("w_adv", "w_con", "w_enc")}


def gan_losses(gan: GAN, x: torch.Tensor, w_adv: float, w_con: float, w_enc: float,
               adaptivemix: AdaptiveMix | None = None) -> GANLosses:
    """GANomaly's losses of batch ``x``, one discriminator pass on ``x`` and one on ``x_hat``.

    Generator: ``w_adv * mean((f(x) - f(x_hat))^2) + w_con * mean|x - x_hat| +
    w_enc * mean((z - z_hat)^2)``, f = the discriminator's last feature map (f(x) as a constant
    target). Discriminator: ``(BCE(real, 1) + BCE(fake, 0)) / 2``.
    The two losses share the discriminator's graph: apply them with :func:`update`, which sends
    each loss's gradients only to its own network (the discriminator's loss must not reach the
    generator through ``x_hat``, nor the generator's loss the discriminator's weights).

    ``adaptivemix`` (off when None): two more discriminator passes, on a mixture of the real
    batch and on a mixture of the reconstructions (each mixed within itself), give AdaptiveMix's
    GAN terms ``s_real``, ``s_fake`` = ``-cos(f(x_mix), detached mix of f)`` with f the feature
    map above (f(x), f(x_hat) of this step as the unmixed features). As in the official
    StyleGAN2 code, the discriminator gets both (``+ w/2 (s_real + s_fake)``: each keeps weight
    w relative to its own BCE term, which GANomaly halves) and the generator gets ``+ w s_fake``
    (its gradient reaches the generator through the mixed reconstructions). One fake mixture
    serves both networks, as the two steps share the weights of the start of the step.
    """
    x_hat, z, z_hat = gan.generator(x)
    logit_real, f_real = gan.discriminator(x)
    logit_fake, f_fake = gan.discriminator(x_hat)
    loss_g = (w_adv * (f_real.detach() - f_fake).pow(2).mean()
              + w_con * (x - x_hat).abs().mean()
              + w_enc * (z - z_hat).pow(2).mean())
    loss_d = 0.5 * (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
                    + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
    if adaptivemix is None:
        return GANLosses(loss_g, loss_d, (x_hat, z, z_hat), loss_g, loss_d)

    def features(v: torch.Tensor) -> torch.Tensor:
        return gan.discriminator(v)[1]

    s_real = adaptivemix.cosine_loss(features, x, f_real)
    s_fake = adaptivemix.cosine_loss(features, x_hat, f_fake)
    w = adaptivemix.weight
    return GANLosses(loss_g + w * s_fake, loss_d + 0.5 * w * (s_real + s_fake),
                     (x_hat, z, z_hat), loss_g, loss_d, (s_real, s_fake))


def _params(optimizers: Iterable[torch.optim.Optimizer]) -> list[torch.Tensor]:
    return [p for o in optimizers for group in o.param_groups for p in group["params"]
            if p.requires_grad]


def update(loss_g: torch.Tensor, loss_d: torch.Tensor,
           g_optimizers: Sequence[torch.optim.Optimizer],
           d_optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """One optimiser step of both sides: ``loss_g``'s gradients go only to the parameters of
    ``g_optimizers`` (generators, and e.g. a distillation projection), ``loss_d``'s only to those
    of ``d_optimizers``; then every optimiser steps. Gradients of the discriminator's weights
    under ``loss_g`` are never computed (they were thrown away before)."""
    for o in (*g_optimizers, *d_optimizers):
        o.zero_grad(set_to_none=True)
    loss_g.backward(inputs=_params(g_optimizers), retain_graph=True)
    loss_d.backward(inputs=_params(d_optimizers))
    for o in (*g_optimizers, *d_optimizers):
        o.step()


class StepResult(NamedTuple):
    """``loss_g``: GANomaly's generator loss plus any extra loss (distillation); ``loss_d``:
    GANomaly's discriminator loss (AdaptiveMix's terms left out of both, so that histories
    with and without it compare); ``similarity``: AdaptiveMix's mean cosine similarity on
    (real, fake) mixtures, None when off."""

    loss_g: float
    loss_d: float
    outputs: Outputs
    d_reset: bool
    similarity: tuple[float, float] | None = None


def similarities(losses: GANLosses) -> tuple[float, float] | None:
    """AdaptiveMix's mean cosine similarities (real, fake) of one batch (None when off)."""
    if losses.shrinkage is None:
        return None
    return (-losses.shrinkage[0].item(), -losses.shrinkage[1].item())


def gan_step(gan: GAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             x: torch.Tensor, weights: Mapping[str, float],
             extra_g_loss: Callable[[Outputs], torch.Tensor] | None = None,
             extra_optimizers: Sequence[torch.optim.Optimizer] = (),
             adaptivemix: AdaptiveMix | None = None) -> StepResult:
    """One GANomaly update of generator and discriminator on batch ``x``.

    ``weights``: ``w_adv``, ``w_con``, ``w_enc``. ``extra_g_loss(outputs)`` is added to the
    generator's loss (e.g. distillation; it reuses this step's generator outputs);
    ``extra_optimizers`` step the extra parameters it trains. ``adaptivemix``: AdaptiveMix's
    terms (see :func:`gan_losses`), off when None. A collapsed discriminator is
    re-initialised after the step (:func:`reset_if_collapsed`, on GANomaly's loss).
    """
    losses = gan_losses(gan, x, **weights, adaptivemix=adaptivemix)
    loss_g = losses.generator
    extra = extra_g_loss(losses.outputs) if extra_g_loss is not None else None
    if extra is not None:
        loss_g = loss_g + extra
    update(loss_g, losses.discriminator, (opt_g, *extra_optimizers), (opt_d,))
    if adaptivemix is None:
        ld = losses.discriminator.item()
        return StepResult(loss_g.item(), ld, losses.outputs,
                          reset_if_collapsed(gan.discriminator, ld))
    lg = losses.ganomaly_g + extra if extra is not None else losses.ganomaly_g
    ld = losses.ganomaly_d.item()
    return StepResult(lg.item(), ld, losses.outputs, reset_if_collapsed(gan.discriminator, ld),
                      similarities(losses))


def training_memory_format(device: torch.device, width: int, batch_size: int
                           ) -> torch.memory_format:
    """Memory order for training a net of ``width`` at ``batch_size`` on ``device``.

    Channels-last on the CPU for width >= 8 at batch >= 32: oneDNN's convolutions then ran a
    training step 8-15 % faster (benchmarks/profile_gan_step.py; width 10 and 64 at batch 64);
    at batch 1-4 they were up to 25 % slower, at batch 16 or width 2-3 no faster. Elsewhere
    (and on GPUs, not measured) the default order."""
    if device.type == "cpu" and width >= 8 and batch_size >= 32:
        return torch.channels_last
    return torch.contiguous_format


def train_epochs(data: torch.Tensor, epochs: int, batch_size: int, order: torch.Generator,
                 step: Callable[[torch.Tensor], Sequence[float]], device: torch.device,
                 desc: str, progress: bool,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 after_epoch: Callable[[int], object] | None = None
                 ) -> list[list[float]]:
    """``epochs`` passes over ``data`` (N, C, S, S) in a random order drawn from ``order``, calling
    ``step(batch)`` (batches of ``batch_size``, the last one possibly smaller, on ``device`` in
    ``memory_format``) which returns losses; returns the mean of each loss per epoch (5
    decimals), one list per epoch run. ``after_epoch(k)`` runs after epoch k (1-based), e.g. a
    :class:`ValidationCurve`."""
    n = len(data)
    history: list[list[float]] = []
    bar = tqdm(range(int(epochs)), desc=f"{desc} ({n} images)", unit="epoch", disable=not progress)
    for _ in bar:
        perm = torch.randperm(n, generator=order)
        sums: list[float] = []
        steps = 0
        for start in range(0, n, batch_size):
            x = data[perm[start:start + batch_size]].to(device)
            losses = step(x.contiguous(memory_format=memory_format))
            sums = [a + b for a, b in zip(sums, losses, strict=True)] if sums else list(losses)
            steps += 1
        history.append([round(v / max(steps, 1), 5) for v in sums])
        bar.set_postfix(loss=", ".join(f"{v:.4f}" for v in history[-1]))
        if after_epoch is not None:
            after_epoch(len(history))
    return history


class ValidationCurve:
    """Validation AUROC of a generator after each training epoch (a learning curve).

    ``images``: held-out normals (label 0) and validation anomalies (label 1), an ImageSet with
    labels, or None (then nothing is recorded). Calling ``curve(phase, generator)`` returns an
    ``after_epoch`` callback for :func:`train_epochs`; each call appends ``{"phase", "epoch",
    "latent", "reconstruction"}`` (image AUROC of both scores, 4 decimals) to :attr:`points`.
    The generator is scored in eval mode and put back in the mode it was in.
    """

    def __init__(self, images: ImageSet | None, size: int, channels: int, batch_size: int,
                 device: torch.device):
        self.images, self.size, self.channels = images, size, channels
        self.batch_size, self.device = batch_size, device
        self.points: list[dict[str, Any]] = []
        self.seconds = 0.0

    def __call__(self, phase: str, generator: nn.Module) -> Callable[[int], None] | None:
        if self.images is None:
            return None

        def after_epoch(epoch: int) -> None:
            t0 = time.perf_counter()
            was_training = generator.training
            scores = score_images(generator, self.images, self.size, self.channels,
                                  self.batch_size, self.device)
            generator.train(was_training)
            point: dict[str, Any] = {"phase": phase, "epoch": epoch}
            for kind, s in scores.items():
                point[kind] = (round(auroc(self.images.labels, s), 4)
                               if np.all(np.isfinite(s)) else None)
            self.points.append(point)
            self.seconds += time.perf_counter() - t0
        return after_epoch

    def info(self) -> dict[str, Any]:
        """What a fit records: the points and the seconds spent scoring them (nothing when no
        curve was asked for)."""
        if self.images is None:
            return {}
        return {"validation_curve": self.points,
                "validation_curve_seconds": round(self.seconds, 3)}


def validation_curve(detector: Any) -> ValidationCurve:
    """The :class:`ValidationCurve` of a GAN detector being fitted: its validation images when
    ``validation_curve`` is on and ``fit`` was given validation data, else an empty one."""
    p = detector.params
    images = (getattr(detector, "_validation_during_fit", None) if p["validation_curve"]
              else None)
    batch = detector._score_batch_size(len(images)) if images is not None else 1
    return ValidationCurve(images, p["image_size"], p["channels"], batch, detector.device)


def make_optimizers(gan: GAN, lr: float, betas: Sequence[float]
                    ) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for the generator and for the discriminator (GANomaly: lr 2e-4, betas (0.5, 0.999))."""
    b = (float(betas[0]), float(betas[1]))
    return (torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=b),
            torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=b))


def load_tensor(images: ImageSet, size: int, channels: int) -> torch.Tensor:
    """All images as one (N, channels, size, size) tensor in [-1, 1] (the tanh range).

    Other sizes are resized bilinearly (``stack_images``), as GANomaly's loaders resize MNIST's
    28 px to 32 (torchvision ``Resize``)."""
    return stack_images(images, range(len(images)), size, channels) * 2 - 1


def resolve_channels(params: dict[str, Any], train: ImageSet) -> None:
    """``channels="auto"``: those of the first training image (1 gray, 3 colour)."""
    if params["channels"] == "auto":
        params["channels"] = int(train.image(0).shape[-1])


def latent_score(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """EDE-GAN anomaly score: mean squared distance of the two latent vectors, (B,)."""
    return (z - z_hat).pow(2).flatten(1).mean(1)


def reconstruction_score(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Alternative score: mean absolute reconstruction error, (B,)."""
    return (x - x_hat).abs().flatten(1).mean(1)


@torch.inference_mode()
def score_images(generator: nn.Module, images: ImageSet, size: int, channels: int,
                 batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """Latent and reconstruction scores of every image (generator in eval mode):
    ``{"latent": (N,), "reconstruction": (N,)}`` as float64."""
    generator.eval()
    lat, rec = [], []
    for start in range(0, len(images), batch_size):
        idx = range(start, min(len(images), start + batch_size))
        x = (stack_images(images, idx, size, channels) * 2 - 1).to(device)
        x_hat, z, z_hat = generator(x)
        lat.append(latent_score(z, z_hat).cpu())
        rec.append(reconstruction_score(x, x_hat).cpu())
    return {"latent": torch.cat(lat).numpy().astype(np.float64),
            "reconstruction": torch.cat(rec).numpy().astype(np.float64)}
