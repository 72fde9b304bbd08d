"""Transformaly detector: frozen block teacher, cloned-block student, two Gaussian densities."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distilad import distributed
from distilad.backbones.block_cache import block_features, boundary_bytes
from distilad.backbones.blocks import VIT_PREFIXES, BlockTeacher, create_block_teacher
from distilad.data import ImageSet
from distilad.data.transforms import iter_batches, stack_images
from distilad.detector import Detector, PretrainedTeacher, register
from distilad.errors import DataError, DistiladError
from distilad.memory import cache_budget_bytes
from distilad.methods.transformaly.density import Gaussian, Whitening
from distilad.methods.transformaly.model import (
    CloneStudent,
    TransformalyScoringNet,
    block_mse,
    boundaries_needed,
    distillation_loss,
)
from distilad.modules import adaptivemix
from distilad.modules.batchnorm import recompute_batchnorm
from distilad.modules.training import batch_starts, train_epochs
from distilad.params import AutoOr, Bool, Float, Int, Param, Path, Refused, Text

LITE_TEACHERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: blocks left out by ``blocks="auto"``: the first two, as the official code scores blocks 2-11
#: of ViT-B/16's 12
AUTO_SKIP = 2


class BlockList(Param):
    """``"auto"`` or a non-empty list of distinct block indices >= 0 (checked against the
    teacher's block count when it is built)."""

    def describe(self) -> str:
        return "'auto' or a non-empty list of distinct block indices >= 0"

    def check(self, value: Any) -> Any:
        if value == "auto":
            return "auto"
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
            raise Refused
        out = tuple(Int(min=0).check(v) for v in value)
        if len(set(out)) != len(out):
            raise Refused
        return tuple(sorted(out))


@register
class Transformaly(PretrainedTeacher, Detector):
    """Transformaly (Cohen & Avidan, CVPRW 2022). See methods/transformaly/README.md."""

    name = "transformaly"
    defaults = {
        "backbone": "efficientnet_lite0",
        "weights": None,
        "image_size": 128,
        "blocks": "auto",
        "epochs": 5,
        "batch_size": 32,
        "lr": 1e-4,
        "whitening_threshold": 0.9,
        "precise_bn": True,
        "score_batch_size": 64,
        "feature_cache": None,
        "max_cached_mb": "auto",
        **adaptivemix.PARAM_DEFAULTS,
    }
    param_specs = {
        "backbone": Text(),
        "weights": Path("file", special=("random",)),
        # Lite's stem and stages halve the size five times; a ViT needs whole patches (checked
        # with the patch size in _check_combination)
        "image_size": Int(min=32),
        "blocks": BlockList(),
        "epochs": Int(min=1),
        # BatchNorm of the cloned Lite stages needs 2+ samples per batch
        "batch_size": Int(min=2),
        "lr": Float(0.0, open_low=True),
        "whitening_threshold": Float(0.0, 1.0, open_low=True),
        "precise_bn": Bool(),
        # "auto": measured fastest per image for scoring (distilad.autobatch); the teacher pass
        # over the training images during fit then uses 64
        "score_batch_size": AutoOr(Int(min=1)),
        "feature_cache": Path("folder"),
        # teacher boundaries of the training set are kept in memory when they fit in this many
        # MB, else recomputed every batch; 0 = always recompute; "auto": 60 % of the memory
        # available when the fit starts (distilad.memory)
        "max_cached_mb": AutoOr(Float(0.0)),
        # AdaptiveMix's student form: each clone's output on mixed normal images pulled to the
        # mixed teacher block outputs (methods/README-adaptivemix.md)
        **adaptivemix.param_specs(),
    }

    @classmethod
    def _check_combination(cls, p: dict[str, Any]) -> None:
        backbone, weights = p["backbone"], p["weights"]
        if backbone in LITE_TEACHERS:
            return
        if not backbone.startswith(VIT_PREFIXES):
            raise DistiladError(f"transformaly: unknown backbone {backbone!r}; use "
                                f"{', '.join(LITE_TEACHERS)} (offline weights) or a timm ViT / "
                                "DeiT name (vit_base_patch16_384, ...) with weights=PATH")
        import timm

        if not timm.is_model(backbone):
            raise DistiladError(f"transformaly: timm has no model {backbone!r}")
        if weights is None:
            raise DistiladError(f"transformaly: teacher {backbone} needs its weights from a local "
                                "file: weights=PATH (nothing is downloaded)")
        patch = _patch_size(backbone)
        if patch and p["image_size"] % patch:
            raise DistiladError(f"transformaly: image_size must be a multiple of {backbone}'s "
                                f"patch size {patch}, got {p['image_size']}")

    # --- networks ------------------------------------------------------------------------------
    def _build(self) -> None:
        p = self.params
        self.teacher: BlockTeacher = create_block_teacher(
            p["backbone"], self._teacher_weights(p["weights"]), int(p["image_size"])
        ).to(self.device)
        self._restore_teacher_id(self.teacher)
        n = self.teacher.n_blocks
        blocks = (tuple(range(min(AUTO_SKIP, n - 1), n)) if p["blocks"] == "auto"
                  else tuple(p["blocks"]))
        if max(blocks) >= n:
            raise DistiladError(f"transformaly: blocks {list(blocks)} out of range; "
                                f"{p['backbone']} has blocks 0..{n - 1}")
        self.block_ids = blocks
        self.student = CloneStudent(self.teacher, blocks).to(self.device)
        state = getattr(self, "_density_shapes", None)
        if state is not None:  # loading: the density tensors come from the file
            self.whitening = Whitening(state["feature_dim"], state["n_components"])
            self.pretrained_density = Gaussian(state["n_components"])
            self.ts_density = Gaussian(len(blocks))

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"teacher": self.teacher, "student": self.student, "whitening": self.whitening,
                "pretrained_density": self.pretrained_density, "ts_density": self.ts_density}

    def _extra_state(self) -> dict[str, Any]:
        return {"teacher": self.teacher.identity, "blocks": list(self.block_ids),
                "feature_dim": self.teacher.feature_dim,
                "n_components": self.whitening.n_components}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self._remember_teacher(state)
        self._density_shapes = {"feature_dim": int(state["feature_dim"]),
                                "n_components": int(state["n_components"])}

    # --- training ------------------------------------------------------------------------------
    def _fit(self, train: ImageSet, holdout: ImageSet) -> dict[str, Any]:
        p = self.params
        progress = bool(p["progress"])
        if len(train) < 2:
            raise DataError(f"transformaly needs at least 2 training images, got {len(train)} "
                            f"after holding out {len(holdout)}; give more normal images")
        size, bs = int(p["image_size"]), int(p["batch_size"])
        keep = boundaries_needed(self.block_ids)
        t0 = time.perf_counter()
        # the boundaries in memory when this set's fit in the budget (with a feature cache, the
        # root set's entry on disk serves every class and seed, streamed there batch by batch);
        # else only the (small) pooled features, and the teacher runs again every batch
        in_memory = self._fits_in_memory(train, keep)
        pooled, parts = block_features(self.teacher, train, size, keep if in_memory else (),
                                       self._fit_batch_size(64), self.device,
                                       p["feature_cache"], progress, "teacher features (once)")
        teacher_seconds = time.perf_counter() - t0
        n = len(train)
        opt = torch.optim.Adam(self.student.parameters(), lr=float(p["lr"]))
        self._teacher_step_seconds = 0.0

        mixer = adaptivemix.from_params(p, p["seed"], "transformaly", self.device)
        if mixer is not None:
            distributed.refuse("transformaly: adaptivemix=True")
            images = adaptivemix.TrainingImages(train, size)
            terms = adaptivemix.EpochMeans(len(batch_starts(n, bs)))
            self.teacher.eval()

        student = distributed.wrap(self.student)  # DDP under torchrun, else the student itself

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            t = self._boundaries(train, parts, idx, keep)
            loss = distillation_loss(student(t), t, self.block_ids)
            if mixer is None:
                return loss
            mix = mixer.mix(images(idx).to(self.device))
            t0 = time.perf_counter()
            with torch.no_grad():
                _, t_mix = self.teacher(mix.x, keep)
            self._teacher_step_seconds += time.perf_counter() - t0
            targets = [t[i + 1] for i in self.block_ids]
            # raw features, as the distillation loss and the score compare them (normalised
            # ones made the term ~1/1800 of that loss: README-adaptivemix.md); mean over the
            # blocks, as the distillation loss is
            levels = adaptivemix.student_term(mixer, mix, self.student(t_mix), targets,
                                              normalise=False)
            term = torch.stack(levels).mean()
            terms.add(term.item(), len(idx))
            return loss + mixer.weight * term

        history = train_epochs(self.student, opt, batch_loss, n, bs, int(p["epochs"]),
                               int(p["seed"]), f"transformaly fit ({n} images)", progress)
        distributed.unwrap(self.student)
        info: dict[str, Any] = {}
        if mixer is not None:
            # loss_history stays the distillation loss; the term (unweighted) per epoch beside it
            history, info["adaptivemix"] = terms.split(history, mixer, normalise=False,
                                                       digits=7)
        ordered = [torch.arange(a, min(a + bs, n)) for a in range(0, n, bs)]
        if p["precise_bn"]:
            recompute_batchnorm(self.student, (self._boundaries(train, parts, i, keep)
                                               for i in ordered if len(i) >= 2))
        self.student.eval()
        with torch.inference_mode():
            train_mse = torch.cat([block_mse(self.student(t), t, self.block_ids).cpu()
                                   for t in (self._boundaries(train, parts, i, keep)
                                             for i in ordered)])
        parts.clear()  # the boundaries are not needed any more: free them before the densities
        self.whitening = Whitening.fit(pooled, float(p["whitening_threshold"]))
        self.pretrained_density = Gaussian.fit(self.whitening(pooled))
        self.ts_density = Gaussian.fit(train_mse)
        return {**info, "loss_history": [round(v, 7) for v in history],
                "epochs": int(p["epochs"]),
                "blocks": list(self.block_ids),
                "n_components": self.whitening.n_components,
                "feature_dim": self.teacher.feature_dim,
                "train_block_mse": [round(float(v), 7) for v in train_mse.mean(0)],
                "teacher_boundaries_in_memory": in_memory,
                "teacher_feature_seconds": round(teacher_seconds + self._teacher_step_seconds, 3)}

    def _fits_in_memory(self, images: ImageSet, keep: tuple[int, ...]) -> bool:
        """Whether the teacher boundaries ``keep`` of ``images`` fit in ``max_cached_mb``."""
        per_image = boundary_bytes(self.teacher, int(self.params["image_size"]), keep, self.device)
        return len(images) * per_image <= cache_budget_bytes(self.params["max_cached_mb"])

    def _boundaries(self, images: ImageSet, parts: dict[int, torch.Tensor], idx: torch.Tensor,
                    keep: tuple[int, ...]) -> dict[int, torch.Tensor]:
        """Teacher boundaries ``keep`` of images ``idx``: from memory, else by a teacher pass."""
        if parts:
            return {j: _layout(parts[j][idx].to(self.device, non_blocking=True)) for j in keep}
        x = stack_images(images, idx.tolist(), int(self.params["image_size"])).to(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            _, out = self.teacher(x, keep)
        self._teacher_step_seconds += time.perf_counter() - t0
        return out

    # --- scoring -------------------------------------------------------------------------------
    @torch.inference_mode()
    def _score(self, images: ImageSet) -> tuple[np.ndarray, None]:
        """Image scores = -(log-likelihood of the pretrained feature + log-likelihood of the
        per-block MSE vector); each part is kept in ``alternative_scores`` (negated, so higher
        is more anomalous there too). No anomaly maps."""
        self.student.eval()
        pooled, mse = [], []
        self.score_teacher_seconds = 0.0
        for p_feat, t in self._score_batches(images):
            pooled.append(p_feat.cpu())
            mse.append(block_mse(self.student(t), t, self.block_ids).cpu())
        # on the densities' device (CUDA for a model loaded there): back to the CPU for numpy
        ll_pre = self.pretrained_density.log_likelihood(self.whitening(torch.cat(pooled))).cpu()
        ll_ts = self.ts_density.log_likelihood(torch.cat(mse)).cpu()
        self.alternative_scores = {"pretrained": (-ll_pre).numpy(),
                                   "teacher_student": (-ll_ts).numpy()}
        self.last_block_mse = torch.cat(mse).numpy()
        return (-(ll_pre + ll_ts)).numpy(), None

    def _scoring_net(self) -> TransformalyScoringNet:
        return TransformalyScoringNet(self.teacher, self.student, self.whitening,
                                      self.pretrained_density, self.ts_density,
                                      int(self.params["image_size"]))

    def _score_batches(self, images: ImageSet
                       ) -> Iterator[tuple[torch.Tensor, dict[int, torch.Tensor]]]:
        """(pooled feature, boundaries) per batch: through the disk cache when one is set and the
        set's boundaries fit in memory, else one teacher pass per batch."""
        p = self.params
        size, bs = int(p["image_size"]), self._score_batch_size(len(images))
        keep = boundaries_needed(self.block_ids)
        if p["feature_cache"] is not None and self._fits_in_memory(images, keep):
            t0 = time.perf_counter()
            pooled, parts = block_features(self.teacher, images, size, keep, bs, self.device,
                                           p["feature_cache"], bool(p["progress"]),
                                           "teacher (test)")
            self.score_teacher_seconds = time.perf_counter() - t0
            for a in range(0, len(images), bs):
                yield pooled[a:a + bs], {j: _layout(parts[j][a:a + bs].to(self.device))
                                         for j in keep}
            return
        bar = tqdm(total=len(images), desc="transformaly score", unit="img",
                   disable=not p["progress"] or len(images) < 64, leave=False)
        for _, x, _ in iter_batches(images, bs, size):
            t0 = time.perf_counter()
            pooled, out = self.teacher(x.to(self.device), keep)
            self.score_teacher_seconds += time.perf_counter() - t0
            yield pooled, out
            bar.update(len(x))
        bar.close()


def _layout(t: torch.Tensor) -> torch.Tensor:
    """Feature maps as channels-last (the layout of the Lite teacher and its clones); token
    tensors (ViT) unchanged."""
    return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t


def _patch_size(name: str) -> int | None:
    """The patch size in a timm ViT name (``vit_base_patch16_384`` -> 16), None if not named."""
    import re

    m = re.search(r"patch(\d+)", name)
    return int(m.group(1)) if m else None
