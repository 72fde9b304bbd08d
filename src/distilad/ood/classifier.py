"""A small CIFAR classifier for OOD detection, trained with mixup cross-entropy, with or without
the AdaptiveMix shrinkage term (official code ``classification/models.py`` and ``train.py`` of
WentianZhang-ML/AdaptiveMix, snapshot 163e5d5; decisions in ``methods/README-adaptivemix.md``).

Network (:class:`SubspaceResNet`): the CIFAR ResNet-18 layout (3x3 stem, no max-pool, four
stages of two basic blocks, widths w, 2w, 4w, 8w, strides 1, 2, 2, 2), global average pooling,
the embedding L2-normalised, and the official head: a bias-free linear layer with orthogonal
rows, frozen, applied as ``|W e|``. Each logit is then |cos| between the embedding and one fixed
class direction (a union of 1-D subspaces, as the OOD detector the official README points to).
Inputs are (B, 3, 32, 32) in [0, 1], normalised inside by the CIFAR-10 mean and std.

One training step (:func:`mixup_loss`) on a batch x (B, 3, 32, 32), labels y (B,):

- ``lambda ~ Beta(1, 1)`` once per batch, partner = a permutation of the batch (the mixer);
- ``e_mix = embed(lambda x + (1 - lambda) x[perm])``, logits ``|W e_mix|``;
- mixup cross-entropy ``lambda CE(logits, y) + (1 - lambda) CE(logits, y[perm])``;
- AdaptiveMix on: ``+ w * mse(e_mix, lambda e(x) + (1 - lambda) e(x[perm]) + N(0, sigma^2))``
  with ``e(x)`` computed without gradient (the target is detached in the official code too).

Departure from the official code: its logits on the mixed batch are ``|W z| + |W e_mix|`` (z the
mixed target without noise, with gradient), not ``|W e_mix|``. Here both arms use the same
cross-entropy on ``|W e_mix|`` so that the ablation changes one thing, the shrinkage term.

Pairing: with the same ``seed``, both arms start from the same weights and see the same batches,
crops, flips, lambdas and partners (each from its own seeded generator); the on arm draws the
target's noise from one more generator.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from distilad.modules.adaptivemix import AdaptiveMix, Mix, mse_shrinkage
from distilad.ood.data import to_rgb32

#: CIFAR-10 channel mean and std (official ``config.py``)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SubspaceResNet(nn.Module):
    """CIFAR ResNet-18 layout at ``width`` (64 = the usual ResNet-18) with an L2-normalised
    embedding of ``8 * width`` dimensions and a frozen orthogonal ``|linear|`` head of
    ``num_classes`` rows."""

    def __init__(self, num_classes: int, width: int = 16, blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers, c_in = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2 ** i
            for j in range(n):
                layers.append(BasicBlock(c_in, c_out, 2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.embedding_dim = c_in
        self.head = nn.Linear(c_in, num_classes, bias=False)
        nn.init.orthogonal_(self.head.weight)  # unit, mutually orthogonal class directions
        self.head.weight.requires_grad_(False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 32, 32) in [0, 1] -> unit embeddings (B, embedding_dim)."""
        h = self.stages(self.stem((x - self.mean) / self.std))
        return F.normalize(h.mean(dim=(2, 3)), dim=1)

    def logits_of(self, e: torch.Tensor) -> torch.Tensor:
        """Logits ``|W e|`` (B, num_classes) of embeddings (B, embedding_dim); in [0, 1] for
        unit embeddings."""
        return self.head(e).abs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_of(self.embed(x))


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation on a batch (B, C, H, W): a random H x W crop of the image
    zero-padded by ``pad``, then a horizontal flip with probability 1/2, per image."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(b):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


class LossParts(NamedTuple):
    """One step's loss: ``total`` (with gradient) = ``ce`` + weight * ``term`` (``term`` None
    when AdaptiveMix is off)."""

    total: torch.Tensor
    ce: torch.Tensor
    term: torch.Tensor | None


def mixup_cross_entropy(logits: torch.Tensor, y: torch.Tensor, mix: Mix) -> torch.Tensor:
    """``lambda CE(logits, y) + (1 - lambda) CE(logits, y[perm])``, mean over the batch."""
    ce_a = F.cross_entropy(logits, y, reduction="none")
    ce_b = F.cross_entropy(logits, y[mix.perm], reduction="none")
    return (mix.lam * ce_a + (1 - mix.lam) * ce_b).mean()


def mixup_loss(model: SubspaceResNet, x: torch.Tensor, y: torch.Tensor, mixer: AdaptiveMix,
               shrink: AdaptiveMix | None) -> LossParts:
    """One training step's loss on batch ``x`` (B, 3, 32, 32), labels ``y`` (B,): mixup
    cross-entropy with the mixture drawn by ``mixer``, plus ``shrink.weight`` times the
    AdaptiveMix MSE on the unit embeddings when ``shrink`` is given (its generator draws only the
    target's noise; its ``sigma`` and ``weight`` apply)."""
    mix = mixer.mix(x)
    e_mix = model.embed(mix.x)
    ce = mixup_cross_entropy(model.logits_of(e_mix), y, mix)
    if shrink is None:
        return LossParts(ce, ce, None)
    with torch.no_grad():
        e_x = model.embed(x)
    term = mse_shrinkage(e_mix, shrink.target(e_x, mix))
    return LossParts(ce + shrink.weight * term, ce, term)


@dataclass
class TrainConfig:
    """Training settings; the defaults are this library's CPU budget (official: WRN-28-10,
    200 epochs, lr x0.2 at 60/120/160; see the benchmark for the full-size command)."""

    width: int = 16
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    alpha: float = 1.0
    adaptivemix: bool = False
    adaptivemix_weight: float = 1.0
    sigma: float = 0.05
    seed: int = 0
    #: where the network trains; the weights are initialised and every random draw is made on
    #: the CPU, so a seed gives the same initial weights and draws on any device
    device: str = "cpu"


def _stream(seed: int, name: str) -> int:
    """A seed for the random stream ``name`` of a run seeded with ``seed``."""
    return (int(seed) * 1_000_003 + zlib.crc32(f"ood {name}".encode())) % 2**63


def train_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, cfg: TrainConfig,
                     log: Callable[[str], None] | None = None
                     ) -> tuple[SubspaceResNet, dict[str, Any]]:
    """Train a :class:`SubspaceResNet` on uint8 images (N, 32, 32, 3) with labels (N,) in
    ``0..num_classes-1``: SGD with momentum and weight decay, learning rate decayed by a cosine
    over all steps (a short run has no room for the official steps at epochs 60/120/160),
    random crop and flip, mixup CE (+ AdaptiveMix when ``cfg.adaptivemix``).

    Returns the model (eval mode) and the history: ``ce`` and ``adaptivemix_term`` (unweighted;
    None when off) per epoch (means over batches), ``seconds_per_epoch``, ``steps``."""
    torch.manual_seed(cfg.seed)  # the weights: the same in both arms
    model = SubspaceResNet(num_classes, cfg.width).to(cfg.device)
    data_gen = torch.Generator().manual_seed(_stream(cfg.seed, "data"))
    mixer = AdaptiveMix.seeded(_stream(cfg.seed, "mix"), alpha=cfg.alpha)
    shrink = (AdaptiveMix.seeded(_stream(cfg.seed, "noise"), sigma=cfg.sigma,
                                 weight=cfg.adaptivemix_weight) if cfg.adaptivemix else None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n = len(images)
    per_epoch = n // cfg.batch_size  # drop the last partial batch (BatchNorm, equal steps)
    if per_epoch < 1:
        raise ValueError(f"{n} training images are fewer than one batch of {cfg.batch_size}")
    total = per_epoch * cfg.epochs
    y_all = torch.as_tensor(labels, dtype=torch.long).to(cfg.device)
    history: dict[str, Any] = {"ce": [], "adaptivemix_term": [] if shrink else None,
                               "seconds_per_epoch": [], "steps": total, "config": asdict(cfg)}
    step = 0
    model.train()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=data_gen)
        ce_sum, term_sum = 0.0, 0.0
        for b in range(per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x = random_crop_flip(to_rgb32(images[idx.numpy()]), data_gen).to(cfg.device)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            parts = mixup_loss(model, x, y_all[idx.to(cfg.device)], mixer, shrink)
            opt.zero_grad(set_to_none=True)
            parts.total.backward()
            opt.step()
            step += 1
            ce_sum += float(parts.ce.detach())
            term_sum += float(parts.term.detach()) if parts.term is not None else 0.0
        history["ce"].append(ce_sum / per_epoch)
        if shrink is not None:
            history["adaptivemix_term"].append(term_sum / per_epoch)
        history["seconds_per_epoch"].append(time.perf_counter() - t0)
        if log:
            term = f", term {history['adaptivemix_term'][-1]:.4f}" if shrink else ""
            log(f"epoch {epoch + 1}/{cfg.epochs}: CE {history['ce'][-1]:.4f}{term}, "
                f"{history['seconds_per_epoch'][-1]:.0f} s")
    return model.eval(), history


@torch.no_grad()
def embed_images(model: SubspaceResNet, images: np.ndarray, batch_size: int = 500
                 ) -> torch.Tensor:
    """Unit embeddings (N, D) on the CPU of uint8 images (N, 28|32, 28|32[, 3]) (see
    :func:`distilad.ood.data.to_rgb32`), the model in eval mode on its device."""
    model.eval()
    device = model.mean.device
    out = [model.embed(to_rgb32(images[a:a + batch_size]).to(device)).cpu()
           for a in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, model.embedding_dim)


@torch.no_grad()
def mixing_residual(model: SubspaceResNet, images: np.ndarray, embeddings: torch.Tensor,
                    seed: int, batch_size: int = 500) -> float:
    """What the term measures, on held-out images, without noise: mean over elements of
    ``(e(lambda x_a + (1 - lambda) x_b) - (lambda e(x_a) + (1 - lambda) e(x_b)))^2``, with one
    lambda ~ Beta(1, 1) and a partner permutation per batch drawn from ``seed``; ``embeddings``
    (N, D) are the model's embeddings of ``images``. Eval mode; the same draws for both arms."""
    model.eval()
    mixer = AdaptiveMix.seeded(_stream(seed, "residual"), sigma=0.0)
    total, count = 0.0, 0
    for a in range(0, len(images), batch_size):
        x = to_rgb32(images[a:a + batch_size])
        mix = mixer.mix(x)
        z = mixer.target(embeddings[a:a + batch_size].cpu(), mix)
        total += float(((model.embed(mix.x.to(model.mean.device)).cpu() - z) ** 2).sum())
        count += z.numel()
    return total / max(count, 1)
