"""P-KDGAN detector: a thin student EDE-GAN distilled from a wide EDE-GAN teacher.

Zhang et al., "P-KDGAN: Progressive Knowledge Distillation with GANs for One-class Novelty
Detection", IJCAI 2020 (arXiv 2007.06963; extended as 2109.07295). No code was published; the
decisions below fill what the paper text available to us does not say (methods/pkdgan/README.md).

Distillation loss between the two GANs (student s, teacher t):
``w_kd_z * ||P z_s - z_t||^2 + w_kd_zhat * ||P z_hat_s - z_hat_t||^2 + w_kd_x * |x_hat_s - x_hat_t|_1``,
where ``P`` is a learned linear map from the student's latent size to the teacher's (used only
in training). Schedules:

- ``two-step`` (P-KDGAN): teacher trained alone; step 1: student learns from the frozen teacher
  (distillation + its own GAN loss); step 2: both fine-tuned jointly (teacher GAN loss + student
  GAN loss + distillation, gradients into both).
- ``fixed``: step 1 only. ``joint``: step 2 only (student from scratch). ``alone``: the student
  EDE-GAN trained by its own GAN loss, no teacher at all.

The scored (deployed) model is the student; the teacher's score is kept for comparison.
Epochs are set per phase (``teacher_epochs``, ``step1_epochs``, ``step2_epochs``); EDE-GAN's
``epochs`` is refused. Under ``alone`` (a baseline without teacher) the teacher's arguments
(``width``, ``nz``, ``teacher_epochs``, ``w_kd_*``, ``teacher_cache``) have no effect.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distilad.atomic import atomic_path
from distilad.data import ImageSet
from distilad.detector import Detector, register
from distilad.errors import DistiladError
from distilad.methods.edegan.detector import GAN_DEFAULTS, GAN_SPECS
from distilad.methods.edegan.model import EDEGAN, count_flops
from distilad.modules import adaptivemix
from distilad.modules.gan import (
    gan_losses,
    gan_step,
    load_tensor,
    loss_weights,
    make_optimizers,
    reset_if_collapsed,
    resolve_channels,
    score_images,
    similarities,
    train_epochs,
    training_memory_format,
    update,
    validation_curve,
)
from distilad.modules.scoring import GeneratorScoringNet
from distilad.params import Float, Int, OneOf
from distilad.params import Path as PathParam

SCHEDULES = ("two-step", "fixed", "joint", "alone")


def distillation_loss(s_out: tuple[torch.Tensor, ...], t_out: tuple[torch.Tensor, ...],
                      proj: nn.Module, p: dict[str, Any]) -> torch.Tensor:
    """KD loss between (x_hat, z, z_hat) of student and teacher (see the module docstring)."""
    xs, zs, zhs = s_out
    xt, zt, zht = t_out
    return (p["w_kd_z"] * (proj(zs) - zt).pow(2).mean()
            + p["w_kd_zhat"] * (proj(zhs) - zht).pow(2).mean()
            + p["w_kd_x"] * (xs - xt).abs().mean())


@register
class PKDGANDetector(Detector):
    """P-KDGAN (Zhang et al., IJCAI 2020): a thin EDE-GAN student distilled from a wide teacher."""

    name = "pkdgan"
    # "epochs" of EDE-GAN is replaced by the epochs of each phase
    defaults = {
        **{k: v for k, v in GAN_DEFAULTS.items() if k != "epochs"},
        "student_width": 8,
        "student_nz": 32,
        "schedule": "two-step",
        "teacher_epochs": 15,
        "step1_epochs": 10,
        "step2_epochs": 5,
        "w_kd_z": 1.0,
        "w_kd_zhat": 1.0,
        "w_kd_x": 50.0,
        "teacher_cache": None,
    }
    param_specs = {
        **{k: v for k, v in GAN_SPECS.items() if k != "epochs"},
        "student_width": Int(min=1),
        "student_nz": Int(min=1),
        "schedule": OneOf(*SCHEDULES),
        "teacher_epochs": Int(min=1),
        "step1_epochs": Int(min=0),
        "step2_epochs": Int(min=0),
        "w_kd_z": Float(0.0),
        "w_kd_zhat": Float(0.0),
        "w_kd_x": Float(0.0),
        "teacher_cache": PathParam("folder"),
    }
    retired_params = {"epochs": "set teacher_epochs, step1_epochs and step2_epochs instead "
                                "(e.g. --set step1_epochs=10)"}

    @classmethod
    def _check_combination(cls, p: dict[str, Any]) -> None:
        if p["step1_epochs"] + p["step2_epochs"] < 1:
            raise DistiladError("pkdgan: step1_epochs + step2_epochs must be at least 1 (the "
                                "student's training), got 0")

    def _prepare(self, train: ImageSet) -> None:
        resolve_channels(self.params, train)

    def _build(self) -> None:
        p = self.params
        self.teacher = EDEGAN(p["image_size"], p["channels"], p["nz"], p["width"]).to(self.device)
        self.student = EDEGAN(p["image_size"], p["channels"], p["student_nz"],
                              p["student_width"]).to(self.device)
        self.proj = nn.Conv2d(p["student_nz"], p["nz"], 1, bias=False).to(self.device)

    def _modules(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher, "student": self.student, "proj": self.proj}

    def _epochs(self, data: torch.Tensor, epochs: int, desc: str,
                step: Callable[[torch.Tensor], tuple[float, float]],
                fmt: torch.memory_format, after_epoch: Callable[[int], object] | None = None
                ) -> list[list[float]]:
        """``epochs`` passes of ``step`` on batches in ``fmt``; per epoch [mean generator loss,
        mean discriminator loss]. Each phase shuffles with its own seeded order."""
        p = self.params
        order = torch.Generator().manual_seed(int(p["seed"]) + zlib.crc32(desc.encode()) % 1000)
        return train_epochs(data, epochs, p["batch_size"], order, step, self.device, desc,
                            p["progress"], fmt, after_epoch)

    def _fit(self, train: ImageSet, holdout: ImageSet) -> dict[str, Any]:
        p = self.params
        schedule = p["schedule"]
        data = load_tensor(train, p["image_size"], p["channels"])
        lr, betas, weights = p["lr"], p["betas"], loss_weights(p)
        t_fmt = training_memory_format(self.device, p["width"], p["batch_size"])
        s_fmt = training_memory_format(self.device, p["student_width"], p["batch_size"])
        self.teacher.to(memory_format=t_fmt)  # before the optimisers: changed in place
        self.student.to(memory_format=s_fmt)
        opt_tg, opt_td = make_optimizers(self.teacher, lr, betas)
        opt_sg, opt_sd = make_optimizers(self.student, lr, betas)
        opt_proj = torch.optim.Adam(self.proj.parameters(), lr=lr, betas=tuple(betas))
        resets = {"teacher": 0, "student": 0}
        info: dict[str, Any] = {"schedule": schedule}
        # the learning curve follows the model each phase trains: the teacher while it is
        # pretrained, the (deployed) student after
        curve = validation_curve(self)
        # AdaptiveMix (None when off): every phase mixes with its own seeded stream; the
        # discriminators of teacher and student both get its terms
        mixers = {phase: adaptivemix.from_params(p, p["seed"], phase, self.device)
                  for phase in ("teacher", "student alone", "step 1", "step 2")}

        def alone_step(gan: EDEGAN, role: str, opt_g, opt_d, phase: str) -> Callable:
            def step(x: torch.Tensor) -> tuple[float, ...]:
                gan.train()
                r = gan_step(gan, opt_g, opt_d, x, weights, adaptivemix=mixers[phase])
                resets[role] += r.d_reset
                return (r.loss_g, r.loss_d, *(r.similarity or ()))
            return step

        def fixed_step(x: torch.Tensor) -> tuple[float, ...]:
            self.student.train()
            self.teacher.eval()
            with torch.no_grad():
                t_out = self.teacher.generator(x)
            r = gan_step(self.student, opt_sg, opt_sd, x, weights,
                         extra_g_loss=lambda s_out: distillation_loss(s_out, t_out, self.proj, p),
                         extra_optimizers=(opt_proj,), adaptivemix=mixers["step 1"])
            resets["student"] += r.d_reset
            return (r.loss_g, r.loss_d, *(r.similarity or ()))

        def joint_step(x: torch.Tensor) -> tuple[float, ...]:
            self.student.train()
            self.teacher.train()
            lt = gan_losses(self.teacher, x, **weights, adaptivemix=mixers["step 2"])
            ls = gan_losses(self.student, x, **weights, adaptivemix=mixers["step 2"])
            kd = distillation_loss(ls.outputs, lt.outputs, self.proj, p)
            loss_g = lt.generator + ls.generator + kd
            update(loss_g, lt.discriminator + ls.discriminator, (opt_tg, opt_sg, opt_proj),
                   (opt_td, opt_sd))
            for role, gan, ld in (("teacher", self.teacher, lt.ganomaly_d),
                                  ("student", self.student, ls.ganomaly_d)):
                resets[role] += reset_if_collapsed(gan.discriminator, ld.item())
            if mixers["step 2"] is None:
                return loss_g.item(), lt.discriminator.item() + ls.discriminator.item()
            # GANomaly's losses (AdaptiveMix's terms apart), then (real, fake) similarities
            # of the teacher and of the student
            return ((lt.ganomaly_g + ls.ganomaly_g + kd).item(),
                    lt.ganomaly_d.item() + ls.ganomaly_d.item(),
                    *similarities(lt), *similarities(ls))

        similarity: dict[str, list[list[float]]] = {}

        def losses_of(phase: str, history: list[list[float]]) -> list[list[float]]:
            """The [generator, discriminator] history of a phase; AdaptiveMix's similarity
            columns set apart."""
            if mixers[phase] is not None:
                similarity[phase] = [h[2:] for h in history]
            return [h[:2] for h in history]

        trained = {"teacher": 0, "step1": 0, "step2": 0, "alone": 0}
        if schedule != "alone":
            cached = self._load_cached_teacher(train)
            if cached is None:
                info["teacher_loss"] = losses_of("teacher", self._epochs(
                    data, p["teacher_epochs"], "teacher",
                    alone_step(self.teacher, "teacher", opt_tg, opt_td, "teacher"), t_fmt,
                    curve("teacher", self.teacher.generator)))
                trained["teacher"] = len(info["teacher_loss"])
                self._save_cached_teacher(train, info["teacher_loss"])
            else:
                info["teacher_loss"] = cached
            info["teacher_from_cache"] = cached is not None
            # step 2 starts from fresh optimiser states either way, so a cached teacher and a
            # freshly trained one lead to the same computation
            opt_tg, opt_td = make_optimizers(self.teacher, lr, betas)
        if schedule == "alone":
            info["student_loss"] = losses_of("student alone", self._epochs(
                data, p["step1_epochs"] + p["step2_epochs"], "student alone",
                alone_step(self.student, "student", opt_sg, opt_sd, "student alone"), s_fmt,
                curve("student alone", self.student.generator)))
            trained["alone"] = len(info["student_loss"])
        if schedule in ("two-step", "fixed"):
            e1 = p["step1_epochs"] + (p["step2_epochs"] if schedule == "fixed" else 0)
            info["step1_loss"] = losses_of("step 1", self._epochs(
                data, e1, "step 1 (teacher fixed)", fixed_step, s_fmt,
                curve("step 1", self.student.generator)))
            trained["step1"] = len(info["step1_loss"])
        if schedule in ("two-step", "joint"):
            e2 = p["step2_epochs"] + (p["step1_epochs"] if schedule == "joint" else 0)
            info["step2_loss"] = losses_of("step 2", self._epochs(
                data, e2, "step 2 (joint)", joint_step, t_fmt,
                curve("step 2", self.student.generator)))
            trained["step2"] = len(info["step2_loss"])
        for gan in (self.teacher, self.student):
            gan.to(memory_format=torch.contiguous_format).eval()
        size, nc = p["image_size"], p["channels"]
        tf = count_flops(self.teacher.generator, size, nc)
        sf = count_flops(self.student.generator, size, nc)
        info.update({
            "teacher_flops": tf, "student_flops": sf, "flops_ratio": round(tf / sf, 2),
            "teacher_params": sum(q.numel() for q in self.teacher.generator.parameters()),
            "student_params": sum(q.numel() for q in self.student.generator.parameters()),
        })
        info["params_ratio"] = round(info["teacher_params"] / info["student_params"], 2)
        # passes over the training data made by this fit, all phases (a cached teacher's not
        # counted); epochs_trained splits them by phase
        info["epochs_trained"] = trained
        info["epochs"] = sum(trained.values())
        info["discriminator_resets"] = resets
        if p["adaptivemix"]:
            # per epoch, mean cosine similarity of D's features of (real, fake) mixtures to
            # their targets; step 2: teacher's pair, then the student's
            info["adaptivemix"] = {**mixers["step 2"].info(),
                                   "similarity_real_fake": similarity}
        info.update(curve.info())
        return info

    # -- pretrained-teacher cache: the teacher of step 0 depends only on its own settings, the
    # seed and the training images, so the schedules of one benchmark share one trained teacher.
    _TEACHER_KEYS = ("image_size", "channels", "nz", "width", "teacher_epochs", "batch_size", "lr",
                     "betas", "w_adv", "w_con", "w_enc", "seed")

    def _teacher_cache_file(self, train: ImageSet) -> Path | None:
        folder = self.params["teacher_cache"]
        if not folder:
            return None
        key = {k: self.params[k] for k in self._TEACHER_KEYS}
        key["betas"] = list(key["betas"])
        key["data"] = train.content_fingerprint
        key["device"] = self.device.type  # GPU and CPU training differ numerically
        # v2: DCGAN initialisation, one discriminator pass per batch, GANomaly's halved D loss
        key["code"] = "edegan-teacher-v2"
        if self.params["adaptivemix"]:  # only when on, so that earlier cache entries stay valid
            key["adaptivemix"] = self.params["adaptivemix_weight"]
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return Path(folder) / f"pkdgan-teacher-{digest}.safetensors"

    def _load_cached_teacher(self, train: ImageSet) -> list[list[float]] | None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = self._teacher_cache_file(train)
        if path is None or not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                history = json.loads((f.metadata() or {})["teacher_loss"])
            self.teacher.load_state_dict(load_file(str(path), device=str(self.device)))
        except Exception:  # a damaged cache entry is retrained (and rewritten), never fatal
            return None
        return history

    def _save_cached_teacher(self, train: ImageSet, history: list[list[float]]) -> None:
        from safetensors.torch import save_file

        path = self._teacher_cache_file(train)
        if path is None:
            return
        state = {k: v.detach().cpu().contiguous() for k, v in self.teacher.state_dict().items()}
        with atomic_path(path) as tmp:  # a concurrent reader sees the old file or the new one
            save_file(state, str(tmp), metadata={"teacher_loss": json.dumps(history)})

    def _score(self, images: ImageSet) -> tuple[np.ndarray, None]:
        p = self.params
        args = (images, p["image_size"], p["channels"], self._score_batch_size(len(images)),
                self.device)
        s = score_images(self.student.generator, *args)
        primary = p["score"]
        self.alternative_scores = {k: v for k, v in s.items() if k != primary}
        if p["schedule"] != "alone":
            t = score_images(self.teacher.generator, *args)
            self.alternative_scores.update({f"teacher_{k}": v for k, v in t.items()})
        return s[primary], None

    def _scoring_net(self) -> GeneratorScoringNet:
        """The deployed model is the student (the teacher's scores are for comparison only)."""
        p = self.params
        return GeneratorScoringNet(self.student.generator, p["image_size"], p["channels"],
                                   p["score"])
