"""A method's whole scoring path as one ``nn.Module``, for export (ONNX) and deployment.

A :class:`ScoringNet` starts where the shared preprocessing ends
(:func:`distilad.data.transforms.to_tensor`: images resized to the model's square input size,
channels converted, values in [0, 1]) and ends with the image scores (and anomaly maps) that the
method's ``_score`` returns, computed by the same functions. :mod:`distilad.export` wraps it with
the preprocessing from uint8 images and the calibration.
"""

from __future__ import annotations

import torch
from torch import nn


class ScoringNet(nn.Module):
    """Base class: ``forward(x)`` with x (N, channels, image_size, image_size) float32 in [0, 1]
    returns ``(scores,)`` or, when ``has_maps``, ``(scores, maps)``: scores (N,) float32 (float64
    where the method scores in float64: transformaly's densities), higher = more anomalous; maps
    (N, image_size, image_size) float32."""

    def __init__(self, image_size: int, channels: int, has_maps: bool):
        super().__init__()
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.has_maps = bool(has_maps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # pragma: no cover - abstract
        raise NotImplementedError


class GeneratorScoringNet(ScoringNet):
    """An EDE-GAN generator's scoring path (EDE-GAN, P-KDGAN's student), as
    :func:`distilad.modules.gan.score_images`: images to [-1, 1], x -> (x_hat, z, z_hat), then
    the latent score (mean squared z - z_hat) or the reconstruction score (mean |x - x_hat|).
    Returns (scores (N,),)."""

    def __init__(self, generator: nn.Module, image_size: int, channels: int, score: str):
        super().__init__(image_size, channels, has_maps=False)
        if score not in ("latent", "reconstruction"):
            raise ValueError(f"unknown GAN score {score!r}")
        self.generator = generator
        self.score = score

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        from distilad.modules.gan import latent_score, reconstruction_score

        x = x * 2 - 1
        x_hat, z, z_hat = self.generator(x)
        if self.score == "latent":
            return (latent_score(z, z_hat),)
        return (reconstruction_score(x, x_hat),)
