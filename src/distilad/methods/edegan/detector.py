"""EDE-GAN detector: GANomaly-style training, latent-distance score."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distilad.data import ImageSet
from distilad.data.transforms import stack_images
from distilad.detector import Detector, register
from distilad.errors import DistiladError
from distilad.methods.edegan.model import (
    EDEGAN,
    count_flops,
    discriminator_loss,
    generator_loss,
    latent_score,
    reconstruction_score,
)
from distilad.params import Float, ImageSize, Int, OneOf, Param, Seq

GAN_DEFAULTS: dict[str, Any] = {
    "image_size": 32,
    "channels": "auto",
    "nz": 100,
    "width": 64,
    "epochs": 15,
    "batch_size": 64,
    "lr": 2e-4,
    "betas": (0.5, 0.999),
    "w_adv": 1.0,
    "w_con": 50.0,
    "w_enc": 1.0,
    "score": "latent",
    "score_batch_size": 256,
}
GAN_SPECS: dict[str, Param] = {
    "image_size": ImageSize(16, power_of_two=True,
                            why="DCGAN blocks halve the image down to 4x4"),
    "channels": OneOf("auto", 1, 3),
    "nz": Int(min=1),
    "width": Int(min=1),
    "epochs": Int(min=1),
    "batch_size": Int(min=1),
    "lr": Float(0.0, open_low=True),
    "betas": Seq(Float(0.0, 1.0, open_high=True), 2),
    "w_adv": Float(0.0),
    "w_con": Float(0.0),
    "w_enc": Float(0.0),
    "score": OneOf("latent", "reconstruction"),
    "score_batch_size": Int(min=1),
}


def load_tensor(images: ImageSet, size: int, channels: int) -> torch.Tensor:
    """All images as one (N, channels, size, size) tensor in [-1, 1]."""
    return stack_images(images, range(len(images)), size, channels) * 2 - 1


def resolve_channels(params: dict[str, Any], train: ImageSet) -> None:
    """``channels="auto"``: those of the first training image (1 gray, 3 colour)."""
    if params["channels"] == "auto":
        params["channels"] = int(train.image(0).shape[-1])


def gan_step(gan: EDEGAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             x: torch.Tensor, p: dict[str, Any], extra_g_loss: torch.Tensor | None = None
             ) -> tuple[float, float, tuple[torch.Tensor, ...]]:
    """One GANomaly update of generator then discriminator; returns (loss_g, loss_d, outputs)."""
    loss_g, out = generator_loss(gan, x, p["w_adv"], p["w_con"], p["w_enc"])
    if extra_g_loss is not None:
        loss_g = loss_g + extra_g_loss
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    loss_d = discriminator_loss(gan, x, out[0])
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    if loss_d.item() < 1e-5:  # GANomaly: a collapsed discriminator is re-initialised
        gan.discriminator.apply(_reset)
    return loss_g.item(), loss_d.item(), out


def _reset(m: torch.nn.Module) -> None:
    if hasattr(m, "reset_parameters"):
        m.reset_parameters()


def make_optimizers(gan: EDEGAN, p: dict[str, Any]) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    betas = tuple(p["betas"])
    return (torch.optim.Adam(gan.generator.parameters(), lr=p["lr"], betas=betas),
            torch.optim.Adam(gan.discriminator.parameters(), lr=p["lr"], betas=betas))


@torch.inference_mode()
def score_gan(gan: EDEGAN, images: ImageSet, p: dict[str, Any], device: torch.device
              ) -> dict[str, np.ndarray]:
    """Latent and reconstruction scores of every image: {"latent": (N,), "reconstruction": (N,)}."""
    gan.eval()
    size, nc, bs = int(p["image_size"]), int(p["channels"]), int(p["score_batch_size"])
    lat, rec = [], []
    for start in range(0, len(images), bs):
        idx = range(start, min(len(images), start + bs))
        x = (stack_images(images, idx, size, nc) * 2 - 1).to(device)
        x_hat, z, z_hat = gan.generator(x)
        lat.append(latent_score(z, z_hat).cpu())
        rec.append(reconstruction_score(x, x_hat).cpu())
    return {"latent": torch.cat(lat).numpy().astype(np.float64),
            "reconstruction": torch.cat(rec).numpy().astype(np.float64)}


@register
class EDEGANDetector(Detector):
    """EDE-GAN (Zhang et al., arXiv 2109.07295): encoder-decoder-encoder GAN, latent score."""

    name = "edegan"
    defaults = dict(GAN_DEFAULTS)
    param_specs = dict(GAN_SPECS)

    def _prepare(self, train: ImageSet) -> None:
        resolve_channels(self.params, train)

    def _build(self) -> None:
        p = self.params
        if p["channels"] == "auto":
            raise DistiladError("edegan: channels unresolved (fit first)")
        self.gan = EDEGAN(p["image_size"], p["channels"], p["nz"], p["width"]).to(self.device)

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"gan": self.gan}

    def _fit(self, train: ImageSet, holdout: ImageSet) -> dict[str, Any]:
        p = self.params
        data = load_tensor(train, p["image_size"], p["channels"])
        opt_g, opt_d = make_optimizers(self.gan, p)
        gen = torch.Generator().manual_seed(int(p["seed"]))
        n, bs = len(data), int(p["batch_size"])
        history = []
        bar = tqdm(range(int(p["epochs"])), desc=f"edegan fit ({n} images)", unit="epoch",
                   disable=not p["progress"])
        for _ in bar:
            self.gan.train()
            perm = torch.randperm(n, generator=gen)
            lg = ld = 0.0
            steps = 0
            for start in range(0, n, bs):
                x = data[perm[start:start + bs]].to(self.device)
                g, d, _ = gan_step(self.gan, opt_g, opt_d, x, p)
                lg, ld, steps = lg + g, ld + d, steps + 1
            history.append((round(lg / steps, 5), round(ld / steps, 5)))
            bar.set_postfix(loss_g=f"{history[-1][0]:.4f}", loss_d=f"{history[-1][1]:.4f}")
        self.gan.eval()
        return {"epochs": int(p["epochs"]), "loss_history_g_d": history,
                "generator_flops": count_flops(self.gan.generator, p["image_size"], p["channels"]),
                "generator_params": sum(q.numel() for q in self.gan.generator.parameters())}

    def _score(self, images: ImageSet) -> tuple[np.ndarray, None]:
        scores = score_gan(self.gan, images, self.params, self.device)
        primary = self.params["score"]
        self.alternative_scores = {k: v for k, v in scores.items() if k != primary}
        return scores[primary], None
