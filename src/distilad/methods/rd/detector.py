"""Reverse Distillation detector: frozen teacher, trainable OCBE + decoder student."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distilad import distributed
from distilad.backbones import DEFAULT_TEACHER, OFFLINE_TEACHERS, create_teacher
from distilad.backbones.cache import teacher_features
from distilad.data import ImageSet
from distilad.data.transforms import iter_batches, resize_map
from distilad.detector import Detector, PretrainedTeacher, register
from distilad.errors import DataError, DistiladError
from distilad.methods.rd.model import RDScoringNet, Student, anomaly_map, rd_loss
from distilad.methods.rd.surface import SurfaceHead, SurfaceStats, combine, leave_one_out
from distilad.modules import adaptivemix
from distilad.modules.batchnorm import fold_batchnorm, recompute_batchnorm
from distilad.modules.schedule import LR_SCHEDULES, make_lr_schedule
from distilad.modules.training import batch_starts, train_epochs
from distilad.params import AutoOr, Bool, Float, ImageSize, Int, OneOf, Path, Seq, Text


@register
class ReverseDistillation(PretrainedTeacher, Detector):
    """RD4AD (Deng & Li, CVPR 2022). See methods/rd/README.md for defaults and deviations."""

    name = "rd"
    defaults = {
        "backbone": DEFAULT_TEACHER,
        "weights": None,
        "image_size": 256,
        "epochs": 20,
        "batch_size": 16,
        "lr": 0.005,
        "betas": (0.5, 0.999),
        "sigma": 4.0,
        "ocbe_blocks": 3,
        "decoder_blocks": (3, 4, 6),
        "score_batch_size": "auto",
        "feature_cache": None,
        "image_score": "max",
        "precise_bn": True,
        "lr_schedule": "constant",
        # issue 15's scoring options (methods/rd/surface.py); off = RD as before
        "map_normalization": "none",
        "patch_density": "none",
        "rd_weight": 1.0,
        "density_weight": 1.0,
        "preset": "none",
        **adaptivemix.PARAM_DEFAULTS,
    }
    #: issue 15's study, chosen on validation by a rule written before the runs (README
    #: "Surface options"): the Lite2 teacher; held-out share 0.3 so that a 1 % threshold has
    #: 100+ normals behind it on a few hundred training images
    presets = {"surface": {"backbone": "efficientnet_lite2", "holdout_fraction": 0.3}}
    param_specs = {
        "backbone": Text(),
        "weights": Path("file", special=("random",)),
        # the student halves the teacher's stride-16 map once more and mirrors it back up: the
        # stride-4/8/16 maps of teacher and student only line up for multiples of 32
        "image_size": ImageSize(32, step=32, why="the student works at stride 32"),
        "epochs": Int(min=1),
        # BatchNorm needs 2+ samples per training batch (a batch of one is skipped)
        "batch_size": Int(min=2),
        "lr": Float(0.0, open_low=True),
        "betas": Seq(Float(0.0, 1.0, open_high=True), 2),
        "sigma": Float(0.0),
        "ocbe_blocks": Int(min=1),
        "decoder_blocks": Seq(Int(min=1), 3),
        # "auto": measured fastest per image on this machine (distilad.autobatch)
        "score_batch_size": AutoOr(Int(min=1)),
        "feature_cache": Path("folder"),
        "image_score": OneOf("max", "mean"),
        "precise_bn": Bool(),
        "lr_schedule": OneOf(*LR_SCHEDULES),
        # per-pixel z-score of the map on the held-out normals' maps
        "map_normalization": OneOf("none", "holdout"),
        # a Gaussian over the teacher's patch features, its distance map combined with RD's
        "patch_density": OneOf("none", "gaussian"),
        # weights of the two z-scored maps under patch_density="gaussian" (rd_weight=0: density
        # alone)
        "rd_weight": Float(0.0),
        "density_weight": Float(0.0, open_low=True),
        # a named bundle of the values above (``presets``); arguments given explicitly win
        "preset": OneOf("none", "surface"),
        # AdaptiveMix's student form: the student's features of mixed normal images pulled to
        # the mixed teacher features (methods/README-adaptivemix.md)
        **adaptivemix.param_specs(),
    }

    @classmethod
    def _check_combination(cls, p: dict[str, Any]) -> None:
        _check_teacher(p["backbone"], p["weights"])
        if p["patch_density"] == "none":
            for key in ("rd_weight", "density_weight"):
                if float(p[key]) != 1.0:
                    raise DistiladError(f"rd: {key} weighs the density map; it needs "
                                        f"patch_density='gaussian' (or leave {key} at 1)")

    @property
    def _surface_on(self) -> bool:
        p = self.params
        return p["map_normalization"] != "none" or p["patch_density"] != "none"

    def _surface_head(self) -> SurfaceHead:
        p = self.params
        return SurfaceHead(self.surface, int(p["image_size"]), float(p["sigma"]),
                           p["map_normalization"] == "holdout", p["patch_density"] == "gaussian",
                           float(p["rd_weight"]), float(p["density_weight"]))

    def _map(self, t: list[torch.Tensor]) -> torch.Tensor:
        """Teacher maps -> the scored (B, S, S) map: RD's own, or under the surface options
        :class:`SurfaceHead`'s."""
        p = self.params
        student = self._inference_student()
        if not self._surface_on:
            return anomaly_map(t, student(t), int(p["image_size"]), float(p["sigma"]))
        return self._surface_head()(t, student)

    def _inference_student(self) -> torch.nn.Module:
        """The student with its BatchNorms folded into the convolutions (scoring 10-15 % faster
        on a CPU at batch 1), rebuilt whenever any of its tensors has changed since (training
        steps, loading); the student itself while it is in training mode."""
        if self.student.training:
            return self.student
        tensors = [*self.student.parameters(), *self.student.buffers()]
        key = (id(self.student), tuple((t._version, t.data_ptr()) for t in tensors))
        cached = getattr(self, "_folded_student", None)
        if cached is None or cached[0] != key:
            cached = (key, fold_batchnorm(self.student))
            self._folded_student = cached
        return cached[1]

    def _prepare(self, train: ImageSet) -> None:
        if len(train) < 2:
            raise DataError(f"rd needs at least 2 training images (BatchNorm) besides the held-out "
                            f"ones, got {len(train)}; give more normal images")

    def _build(self) -> None:
        p = self.params
        self.teacher = create_teacher(p["backbone"],
                                      self._teacher_weights(p["weights"])).to(self.device)
        self._restore_teacher_id(self.teacher)
        signed = p["backbone"].startswith("efficientnet")
        self.student = Student(tuple(self.teacher.channels), p["ocbe_blocks"],
                               tuple(p["decoder_blocks"]), signed_features=signed).to(self.device)
        # the teacher's maps come channels-last: the student's convolutions follow (faster on CPU)
        self.student.to(memory_format=torch.channels_last)
        if self._surface_on:
            c = self.teacher.channels
            self.surface = SurfaceStats(int(c[1]) + int(c[2]), int(p["image_size"])).to(self.device)

    def _modules(self) -> dict[str, torch.nn.Module]:
        modules = {"teacher": self.teacher, "student": self.student}
        if self._surface_on:
            modules["surface"] = self.surface
        return modules

    def _extra_state(self) -> dict[str, Any]:
        return {"teacher": self.teacher.identity, "teacher_channels": list(self.teacher.channels)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._remember_teacher(state)

    def _fit(self, train: ImageSet, holdout: ImageSet) -> dict[str, Any]:
        p = self.params
        progress = bool(p["progress"])
        t0 = time.perf_counter()
        feats = teacher_features(self.teacher, train, p["image_size"], self._fit_batch_size(16),
                                 self.device, p["feature_cache"], progress,
                                 desc="teacher features (once)")
        teacher_seconds = time.perf_counter() - t0
        n = feats[0].shape[0]
        opt = torch.optim.Adam(self.student.parameters(), lr=p["lr"], betas=tuple(p["betas"]))
        bs = int(p["batch_size"])
        # a last batch of one is skipped (the official loader keeps it, which would crash there
        # too)
        schedule = make_lr_schedule(opt, p["lr_schedule"],
                                    len(batch_starts(n, bs)) * int(p["epochs"]))

        mixer = adaptivemix.from_params(p, p["seed"], "rd", self.device)
        if mixer is not None:
            distributed.refuse("rd: adaptivemix=True")
            images = adaptivemix.TrainingImages(train, int(p["image_size"]))
            terms = adaptivemix.EpochMeans(len(batch_starts(n, bs)))
            self.teacher.eval()

        student = distributed.wrap(self.student)  # DDP under torchrun, else the student itself

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            t = [f[idx].to(self.device, non_blocking=True) for f in feats]
            loss = rd_loss(t, student(t))
            if mixer is None:
                return loss
            mix = mixer.mix(images(idx).to(self.device))
            with torch.no_grad():
                t_mix = self.teacher(mix.x)
            # summed over the three scales, as RD's own loss is
            term = sum(adaptivemix.student_term(mixer, mix, self.student(t_mix), t))
            terms.add(term.item(), len(idx))
            return loss + mixer.weight * term

        history = train_epochs(self.student, opt, batch_loss, n, bs, int(p["epochs"]),
                               int(p["seed"]), f"rd fit ({n} images)", progress,
                               after_step=schedule.step, loss_digits=4)
        distributed.unwrap(self.student)
        info: dict[str, Any] = {}
        if mixer is not None:
            # loss_history stays RD's own loss; the term (unweighted) per epoch beside it
            history, info["adaptivemix"] = terms.split(history, mixer, normalise=True,
                                                       digits=6)
        if p["precise_bn"]:
            recompute_batchnorm(self.student, ([f[a:b].to(self.device) for f in feats]
                                               for a, b in batch_bounds(n, bs)))
        self.student.eval()
        if self._surface_on:
            info["surface"] = self._fit_surface(feats, holdout, bs)
        return {**info, "loss_history": [round(v, 5) for v in history],
                "teacher_feature_seconds": round(teacher_seconds, 3),
                "epochs": int(p["epochs"])}

    @torch.inference_mode()
    def _fit_surface(self, feats: list[torch.Tensor], holdout: ImageSet, bs: int
                     ) -> dict[str, Any]:
        """The surface statistics: the patch Gaussian over the training normals' teacher
        features (all of them, under any option: cheap beside training), then per-pixel and
        global mean / std of the held-out normals' RD and density maps."""
        p = self.params
        t0 = time.perf_counter()
        n = feats[0].shape[0]
        n_patches = self.surface.fit_gaussian([f[a:b].to(self.device) for f in feats]
                                              for a, b in batch_bounds(n, bs))
        rd_maps, den_maps = self.raw_maps(holdout)
        self.surface.fit_maps("rd", rd_maps)
        self.surface.fit_maps("density", den_maps)
        if p["map_normalization"] == "holdout" and len(holdout) > 2:
            # the held-out normals calibrate (and validate) with leave-one-out statistics: their
            # own maps are in the fitted ones, which would make their z-scores optimistic
            head = self._surface_head()
            loo = {"rd": leave_one_out(rd_maps), "density": leave_one_out(den_maps)}
            amap = combine(self.surface, rd_maps if head.uses_rd else None,
                           den_maps if head.density else None, True, head.rd_weight,
                           head.density_weight, loo)
            self._holdout_scored = (holdout, self._pool(amap).numpy(),
                                    [resize_map(m, holdout.image_shape(i))
                                     for i, m in enumerate(amap.numpy())])
        return {"n_patches": n_patches, "n_holdout_maps": len(holdout),
                "seconds": round(time.perf_counter() - t0, 3)}

    @torch.inference_mode()
    def raw_maps(self, images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
        """RD's map and the density map of ``images`` at model resolution, before any
        normalisation: two (N, S, S) float32 CPU tensors (needs the surface statistics' patch
        Gaussian; used at fit and by benchmarks/study_rd_surface.py)."""
        p = self.params
        head = SurfaceHead(self.surface, int(p["image_size"]), float(p["sigma"]), False, True,
                           1.0, 1.0)
        self.student.eval()
        student = self._inference_student()
        rd_maps, den_maps = [], []
        for _, x, _ in iter_batches(images, self._score_batch_size(len(images)),
                                    int(p["image_size"])):
            rd_map, den = head.raw_maps(self.teacher(x.to(self.device)), student)
            assert rd_map is not None and den is not None
            rd_maps.append(rd_map.cpu())
            den_maps.append(den.cpu())
        return torch.cat(rd_maps), torch.cat(den_maps)

    @torch.inference_mode()
    def _score(self, images: ImageSet) -> tuple[np.ndarray, list[np.ndarray]]:
        scored = getattr(self, "_holdout_scored", None)
        if scored is not None and scored[0] is images:  # fit's calibration of the held-out set
            self._holdout_scored = None
            return scored[1], scored[2]
        p = self.params
        size = int(p["image_size"])
        self.student.eval()
        scores: list[float] = []
        maps: list[np.ndarray] = []
        if p["feature_cache"] is not None:
            return self._score_cached(images)
        bar = tqdm(total=len(images), desc="rd score", unit="img",
                   disable=not p["progress"] or len(images) < 64, leave=False)
        self.score_teacher_seconds = 0.0
        for _, x, shapes in iter_batches(images, self._score_batch_size(len(images)), size):
            x = x.to(self.device)
            t0 = time.perf_counter()
            t = self.teacher(x)
            self.score_teacher_seconds += time.perf_counter() - t0
            amap = self._map(t).cpu()
            scores.extend(self._pool(amap).tolist())
            for m, hw in zip(amap.numpy(), shapes, strict=True):
                maps.append(resize_map(m, hw))
            bar.update(len(x))
        bar.close()
        return np.asarray(scores), maps

    def _score_cached(self, images: ImageSet) -> tuple[np.ndarray, list[np.ndarray]]:
        """Scoring through the teacher-feature cache (benchmarks: one teacher pass per test set,
        shared by every class and seed). Maps stay at model resolution for same-size inputs."""
        p = self.params
        size = int(p["image_size"])
        t0 = time.perf_counter()
        feats = teacher_features(self.teacher, images, size, 256, self.device,
                                 p["feature_cache"], bool(p["progress"]), "teacher (test)")
        self.score_teacher_seconds = time.perf_counter() - t0
        scores: list[float] = []
        maps: list[np.ndarray] = []
        bs = 256
        for start in range(0, feats[0].shape[0], bs):
            t = [f[start:start + bs].to(self.device) for f in feats]
            amap = self._map(t).cpu()
            scores.extend(self._pool(amap).tolist())
            for j, m in enumerate(amap.numpy()):
                maps.append(resize_map(m, images.image_shape(start + j)))
        return np.asarray(scores), maps

    def _pool(self, amap: torch.Tensor) -> torch.Tensor:
        """(B, S, S) maps -> (B,) image scores: max (default, as RD4AD) or mean."""
        flat = amap.flatten(1)
        return flat.max(1).values if self.params["image_score"] == "max" else flat.mean(1)

    def export_onnx(self, path: Any, overwrite: bool = False, check: bool = True) -> Any:
        if self._surface_on:
            from distilad.errors import ExportError

            # the graph itself traces (scores within 1e-6 relative in a trial), but its z-scored
            # maps reach magnitudes where export's absolute map check (1e-3) fails on float32
            raise ExportError("rd: a model with map_normalization or patch_density cannot be "
                              "exported to ONNX yet; use the .distilad model file with distilad")
        return super().export_onnx(path, overwrite=overwrite, check=check)

    def _scoring_net(self) -> RDScoringNet:
        p = self.params
        # the BatchNorm-folded student (when not training): the graph det.score runs, fewer ops
        return RDScoringNet(self.teacher, self._inference_student(), int(p["image_size"]),
                            float(p["sigma"]),
                            p["image_score"], self._surface_head() if self._surface_on else None)

    def map_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, S, S) anomaly maps (no resizing back)."""
        return self._map(self.teacher(x))


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, end) of consecutive batches over ``n`` items, a last batch of one folded into the
    one before it (BatchNorm in training mode cannot normalise a single sample)."""
    bounds = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _check_teacher(backbone: str, weights: str | None) -> None:
    """A teacher that can be made: an offline one, or a timm CNN with a weights file."""
    if backbone in OFFLINE_TEACHERS:
        return
    import timm

    if not timm.is_model(backbone):
        raise DistiladError(f"rd: unknown backbone {backbone!r}; use {', '.join(OFFLINE_TEACHERS)} "
                            "(offline weights) or a timm CNN name with weights=PATH")
    if weights is None:
        raise DistiladError(f"rd: teacher {backbone} needs ImageNet weights from a local file: "
                            "weights=PATH (nothing is downloaded); efficientnet_lite0/1/2 work "
                            "offline")
