"""EDE-GAN networks (DCGAN blocks, GANomaly layout); losses and training in modules/gan.py.

Generator: encoder G_E (x -> z), decoder G_D (z -> x_hat), encoder E (x_hat -> z_hat).
Discriminator: a DCGAN encoder with one logit; its last feature map serves feature matching.
All for square inputs of ``image_size`` = 2**k >= 16 pixels, values in [-1, 1].
Widths: ``width`` (ndf = ngf) doubles per downsampling; ``nz`` latent size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from distilad.modules.gan import dcgan_init_


def _levels(image_size: int) -> int:
    k = int(math.log2(image_size))
    if 2**k != image_size or image_size < 16:
        raise ValueError(f"EDE-GAN needs a power-of-two image size >= 16, got {image_size}")
    return k - 2  # stride-2 stages from image_size down to 4x4 (the first without BN)


class Encoder(nn.Module):
    """(B, nc, S, S) -> (B, nz, 1, 1); ``features`` gives the last 4x4 map."""

    def __init__(self, image_size: int, nc: int, nz: int, width: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(nc, width, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, inplace=True)]
        ch = width
        for _ in range(_levels(image_size) - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(ch, nz, 4, 1, 0, bias=False)
        self.out_channels = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Decoder(nn.Module):
    """(B, nz, 1, 1) -> (B, nc, S, S) in [-1, 1]."""

    def __init__(self, image_size: int, nc: int, nz: int, width: int):
        super().__init__()
        n = _levels(image_size)
        ch = width * 2 ** (n - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, ch, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Generator(nn.Module):
    """x -> (x_hat, z, z_hat), the encoder-decoder-encoder pipeline."""

    def __init__(self, image_size: int, nc: int, nz: int, width: int):
        super().__init__()
        self.encoder1 = Encoder(image_size, nc, nz, width)
        self.decoder = Decoder(image_size, nc, nz, width)
        self.encoder2 = Encoder(image_size, nc, nz, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder1(x)
        x_hat = self.decoder(z)
        return x_hat, z, self.encoder2(x_hat)


class Discriminator(nn.Module):
    """x -> (logit (B,), feature map (B, C, 4, 4))."""

    def __init__(self, image_size: int, nc: int, width: int):
        super().__init__()
        self.encoder = Encoder(image_size, nc, 1, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encoder.features(x)
        return self.encoder.head(f).flatten(), f


class EDEGAN(nn.Module):
    """Generator + discriminator of one EDE-GAN, DCGAN-initialised (as GANomaly's)."""

    def __init__(self, image_size: int, nc: int, nz: int, width: int):
        super().__init__()
        self.generator = dcgan_init_(Generator(image_size, nc, nz, width))
        self.discriminator = dcgan_init_(Discriminator(image_size, nc, width))


def count_flops(module: nn.Module, image_size: int, nc: int) -> int:
    """Forward FLOPs of ``module`` for one (1, nc, S, S) input (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    x = torch.zeros(1, nc, image_size, image_size, device=next(module.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    module.train(was_training)
    return int(counter.get_total_flops())
