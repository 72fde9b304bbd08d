"""EDE-GAN detector: GANomaly-style training, latent-distance score."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distilad.data import ImageSet
from distilad.detector import Detector, register
from distilad.errors import DistiladError
from distilad.methods.edegan.model import EDEGAN, count_flops
from distilad.modules import adaptivemix
from distilad.modules.gan import (
    gan_step,
    load_tensor,
    loss_weights,
    make_optimizers,
    resolve_channels,
    score_images,
    train_epochs,
    training_memory_format,
    validation_curve,
)
from distilad.modules.scoring import GeneratorScoringNet
from distilad.params import AutoOr, Bool, Float, ImageSize, Int, OneOf, Param, Seq

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
    "validation_curve": False,
    **adaptivemix.PARAM_DEFAULTS,
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
    # "auto": measured fastest per image on this machine (distilad.autobatch)
    "score_batch_size": AutoOr(Int(min=1)),
    # validation AUROC after every epoch into fit_info["validation_curve"] (one scoring pass
    # of the held-out normals and validation anomalies per epoch)
    "validation_curve": Bool(),
    # AdaptiveMix's -cos term on the discriminator's last feature map (real and fake mixtures
    # in its step, fake mixtures in the generator's; methods/README-adaptivemix.md)
    **adaptivemix.param_specs(),
}


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
        fmt = training_memory_format(self.device, p["width"], p["batch_size"])
        self.gan.to(memory_format=fmt)  # before the optimisers: parameters change in place
        opt_g, opt_d = make_optimizers(self.gan, p["lr"], p["betas"])
        weights = loss_weights(p)
        mixer = adaptivemix.from_params(p, p["seed"], "edegan", self.device)
        resets = 0

        def step(x: torch.Tensor) -> tuple[float, ...]:
            nonlocal resets
            r = gan_step(self.gan, opt_g, opt_d, x, weights, adaptivemix=mixer)
            resets += r.d_reset
            return (r.loss_g, r.loss_d, *(r.similarity or ()))

        curve = validation_curve(self)
        self.gan.train()
        history = train_epochs(data, p["epochs"], p["batch_size"],
                               torch.Generator().manual_seed(int(p["seed"])), step, self.device,
                               "edegan fit", p["progress"], fmt,
                               after_epoch=curve("edegan", self.gan.generator))
        self.gan.to(memory_format=torch.contiguous_format).eval()
        info: dict[str, Any] = {}
        if mixer is not None:
            info["adaptivemix"] = {**mixer.info(), "similarity_real_fake": [h[2:] for h in history]}
            history = [h[:2] for h in history]
        return {**curve.info(), **info, "epochs": len(history), "loss_history_g_d": history,
                "discriminator_resets": resets,
                "generator_flops": count_flops(self.gan.generator, p["image_size"], p["channels"]),
                "generator_params": sum(q.numel() for q in self.gan.generator.parameters())}

    def _score(self, images: ImageSet) -> tuple[np.ndarray, None]:
        p = self.params
        scores = score_images(self.gan.generator, images, p["image_size"], p["channels"],
                              self._score_batch_size(len(images)), self.device)
        primary = p["score"]
        self.alternative_scores = {k: v for k, v in scores.items() if k != primary}
        return scores[primary], None

    def _scoring_net(self) -> GeneratorScoringNet:
        p = self.params
        return GeneratorScoringNet(self.gan.generator, p["image_size"], p["channels"], p["score"])
