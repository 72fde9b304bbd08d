"""The Detector contract shared by every method, the registry, and saving / loading.

``fit`` takes normal images only and holds out a seeded fraction of them for calibration;
``score`` returns image scores (higher = more anomalous) and anomaly maps at input resolution
where the method has them; ``predict`` applies the calibrated threshold.

A saved model is one ``.safetensors`` file: the tensors of every network, and in its metadata a
JSON document with the method, its arguments, preprocessing, calibration and library version.
Loading reads tensors and JSON only; no code is ever unpickled.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from distilad.atomic import atomic_path
from distilad.calibration import CALIBRATION_STRATEGIES, Calibration
from distilad.data import ImageSet, as_image_set, check_readable, with_labels
from distilad.errors import DataError, DistiladError, ModelFileError, NotFittedError
from distilad.params import Bool, Device, Float, Int, Param, check_params

FORMAT_NAME = "distilad-model"
FORMAT_VERSION = 1

_REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available to ``create_detector(cls.name)``."""
    _REGISTRY[cls.name] = cls
    return cls


def list_detectors() -> list[str]:
    """Names accepted by :func:`create_detector`."""
    _import_methods()
    return sorted(_REGISTRY)


def _method_class(name: str) -> type[Detector]:
    _import_methods()
    if name not in _REGISTRY:
        raise DistiladError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def method_defaults(name: str) -> dict[str, Any]:
    """Every argument of method ``name`` with its default value (as ``get_params`` of a new
    detector, without building one)."""
    return _method_class(name).default_params()


def create_detector(name: str, **params: Any) -> Detector:
    """A new, unfitted detector of method ``name`` with ``params`` (see each method's README)."""
    return _method_class(name)(**params)


def _import_methods() -> None:
    import distilad.methods  # noqa: F401  (registers the methods)


@dataclass
class ScoreResult:
    """Scores of N images.

    image_scores: (N,) float, higher = more anomalous.
    anomaly_maps: (N, H, W) float32 at input resolution (a list when sizes differ), or None.
    normalized_scores: (N,) in [0, 1] with the threshold at 0.5 (None before calibration).
    labels: (N,) predicted 0/1 by the calibrated threshold (None before calibration).
    names: one name per image.
    """

    image_scores: np.ndarray
    anomaly_maps: np.ndarray | list[np.ndarray] | None
    names: list[str] = field(default_factory=list)
    normalized_scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    seconds: float = 0.0


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU (``device`` is checked beforehand by
    :class:`distilad.params.Device`)."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into (train, held-out) index arrays; at least one of each."""
    if n < 2:
        raise DataError(f"need at least 2 normal images to fit (one is held out), got {n}")
    n_hold = int(round(n * fraction))
    n_hold = min(max(n_hold, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


class Detector:
    """Base class of all methods. Subclasses set ``name``, ``defaults`` and ``param_specs`` and
    implement ``_build`` (create networks from ``self.params``), ``_fit(train, holdout)``,
    ``_score(images) -> (scores, maps)`` and ``_modules`` (the networks to save).

    Every argument is checked when the detector is made (type, range, device availability, and
    the method's own combinations in ``_check_combination``), so a bad value fails at once with
    one line, before any data is read or any network built.
    """

    name: ClassVar[str] = ""
    #: every accepted argument with its default; unknown arguments are an error.
    defaults: ClassVar[dict[str, Any]] = {}
    #: type and range of every argument in ``defaults`` (see :mod:`distilad.params`).
    param_specs: ClassVar[dict[str, Param]] = {}
    #: arguments a method no longer takes, with what to use instead: refused when given,
    #: dropped when an older model file that holds them is loaded.
    retired_params: ClassVar[dict[str, str]] = {}
    #: named bundles of argument values, chosen by the method's ``preset`` argument (which it
    #: then declares, default "none"); arguments given explicitly win over the preset's.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: arguments every method accepts.
    common_defaults: ClassVar[dict[str, Any]] = {
        "seed": 0,
        "device": "auto",
        "holdout_fraction": 0.1,
        "target_fpr": 0.01,
        "progress": True,
    }
    common_specs: ClassVar[dict[str, Param]] = {
        "seed": Int(min=0, max=2**32 - 1),
        "device": Device(),
        "holdout_fraction": Float(0.0, 1.0, open_low=True, open_high=True),
        # 0 is allowed: the threshold is then the highest held-out score
        "target_fpr": Float(0.0, 1.0, open_high=True),
        "progress": Bool(),
    }
    #: arguments that may change on a fitted detector (they do not change what was learned).
    runtime_params: ClassVar[tuple[str, ...]] = ("progress", "device", "score_batch_size")

    def __init__(self, **params: Any):
        self._setup(params, check_files=True)

    def _setup(self, params: dict[str, Any], check_files: bool) -> None:
        self.params: dict[str, Any] = self.checked_params(params, check_files)
        self.calibration: Calibration | None = None
        self.fit_info: dict[str, Any] = {}
        self.device = resolve_device(self.params["device"])
        self._fitted = False

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        """Every argument of this method with its default value."""
        return {**cls.common_defaults, **cls.defaults}

    @classmethod
    def checked_params(cls, params: dict[str, Any], check_files: bool = True) -> dict[str, Any]:
        """Defaults completed by ``params``, every value checked; DistiladError (one line) for an
        unknown, retired or bad argument."""
        for key in params:
            if key in cls.retired_params:
                raise DistiladError(f"{cls.name}: {key} is not used by {cls.name}; "
                                    f"{cls.retired_params[key]}")
        allowed = cls.default_params()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            import difflib

            hints = [m for u in unknown for m in difflib.get_close_matches(u, allowed, n=1)]
            hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise DistiladError(
                f"{cls.name}: unknown argument(s) {', '.join(unknown)}{hint}; accepted: "
                f"{', '.join(sorted(allowed))}")
        preset = cls.presets.get(str(params.get("preset", "none")), {})
        checked = check_params(cls.name, {**cls.common_specs, **cls.param_specs},
                               {**allowed, **preset, **params}, check_files=check_files)
        cls._check_combination(checked)
        return checked

    @classmethod
    def _check_combination(cls, params: dict[str, Any]) -> None:
        """Checks that involve several arguments (raise DistiladError); none by default."""

    # --- to implement -------------------------------------------------------------------------
    def _build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, train: ImageSet, holdout: ImageSet) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _score(self, images: ImageSet) -> tuple[np.ndarray, list[np.ndarray] | None]:
        raise NotImplementedError  # pragma: no cover

    def _modules(self) -> dict[str, torch.nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _scoring_net(self) -> torch.nn.Module:
        """The whole scoring path as one :class:`distilad.modules.scoring.ScoringNet` (sharing
        this detector's networks), for :meth:`export_onnx`; methods that can be exported
        override it."""
        from distilad.errors import ExportError

        raise ExportError(f"{self.name} cannot be exported to ONNX yet (only rd, edegan, pkdgan and "
                          f"transformaly can); use the .distilad model file with distilad")

    def _score_batch_size(self, n_images: int | None = None) -> int:
        """Images per forward pass when scoring ``n_images`` images: ``score_batch_size``, or
        for ``"auto"`` the size measured fastest per image on this device and thread count
        (:mod:`distilad.autobatch`; the figures are left in ``batch_measurement``)."""
        value = self.params.get("score_batch_size", 16)
        if value != "auto":
            return int(value)
        from distilad.autobatch import measured_batch_size

        return measured_batch_size(self, n_images)

    def _fit_batch_size(self, under_auto: int) -> int:
        """Images per teacher pass over the training images during fit: ``score_batch_size``,
        or ``under_auto`` for ``"auto"`` (a measured size could differ between runs, and with it
        the features' last bits; the scoring path it would time is not trained yet)."""
        value = self.params.get("score_batch_size", under_auto)
        return under_auto if value == "auto" else int(value)

    def _prepare(self, train: ImageSet) -> None:
        """Resolve data-dependent arguments (e.g. ``channels="auto"``) before ``_build``."""

    #: other image scores of the last ``score`` call, by name (e.g. reconstruction error beside a
    #: latent distance), so that benchmarks can compare scores of the same model.
    alternative_scores: dict[str, np.ndarray]

    def _extra_state(self) -> dict[str, Any]:
        """JSON-able state beyond tensors and params that loading needs (e.g. teacher identity)."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # --- the contract -------------------------------------------------------------------------
    def fit(self, data: Any, validation: Any = "synthetic") -> Detector:
        """Train on normal images only (a folder, MVTec category, ImageSet or array); returns self.

        A seeded ``holdout_fraction`` of the images is held out from training and used to
        calibrate the threshold (``target_fpr``) and the score normalisation. Then the held-out
        normals are scored against ``validation``: ``"synthetic"`` (synthetic defects made from
        them, see :mod:`distilad.data.validation`), anomalous images (ImageSet, array, folder),
        or None to skip; the result is ``fit_info["validation"]`` (see
        :func:`distilad.evaluate.validation_report`).
        """
        from distilad import distributed
        from distilad.data.validation import validation_set
        from distilad.evaluate import resolve_validation, validation_report

        distributed.check_method(self.name)  # under torchrun: a method that can train so
        anomalies = resolve_validation(validation)  # a bad path fails before training
        images = as_image_set(data, split="train")
        if images.labels is not None and np.any(images.labels != 0):
            raise DataError("fit takes normal images only; the data given has anomalous labels")
        check_readable(images)  # an unreadable or oversized file fails now, not mid-training
        seed = int(self.params["seed"])
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        train_idx, hold_idx = holdout_split(len(images), self.params["holdout_fraction"], seed)
        train, holdout = images.subset(train_idx), images.subset(hold_idx)
        self._prepare(train)
        self._build()
        # methods that follow validation during training (e.g. a GAN's validation_curve) read
        # this; never saved, dropped after fit
        self._validation_during_fit = (None if anomalies is None else validation_set(
            holdout, None if isinstance(anomalies, str) else anomalies, seed))
        t0 = time.perf_counter()
        try:
            info = self._fit(train, holdout) or {}
        finally:
            self._validation_during_fit = None
        if not distributed.is_main_process():
            return self  # another rank of a multi-process fit: rank 0 calibrates and keeps it
        info = {**info, **distributed.fit_info()}
        train_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        scores, maps = self._score(holdout)
        _check_finite(scores, "held-out images")
        self.calibration = Calibration.from_holdout(scores, maps, self.params["target_fpr"])
        self.fit_info = {
            **info,
            "n_train": len(train),
            "n_holdout": len(holdout),
            "train_seconds": round(train_seconds, 3),
            "calibration_seconds": round(time.perf_counter() - t1, 3),
            "data": images.description,
        }
        if anomalies is not None:  # reuses the held-out scores of the calibration
            self.fit_info["validation"] = validation_report(self, holdout, scores, maps, anomalies)
        self._fitted = True
        return self

    def score(self, data: Any) -> ScoreResult:
        """Scores (and maps) for ``data``; see :class:`ScoreResult`."""
        self._check_fitted()
        images = as_image_set(data, split="test")
        t0 = time.perf_counter()
        scores, maps = self._score(images)
        seconds = time.perf_counter() - t0
        _check_finite(scores, "the images given")
        out_maps: np.ndarray | list[np.ndarray] | None = maps
        if maps is not None and len({m.shape for m in maps}) <= 1:
            out_maps = np.stack(maps) if maps else np.zeros((0, 0, 0), np.float32)
        result = ScoreResult(image_scores=np.asarray(scores, dtype=np.float64),
                             anomaly_maps=out_maps, names=list(images.names), seconds=seconds)
        if self.calibration is not None:
            result.normalized_scores = self.calibration.normalize(result.image_scores)
            result.labels = self.calibration.predict(result.image_scores)
        return result

    def predict(self, data: Any) -> np.ndarray:
        """0 (normal) / 1 (anomalous) per image, by the threshold calibrated on held-out normals."""
        result = self.score(data)
        if result.labels is None:
            raise NotFittedError("this detector has no calibration; fit it first")
        return result.labels

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"{self.name} detector is not fitted: call fit() or load a model")

    # --- threshold ------------------------------------------------------------------------------
    def calibrate(self, data: Any, target_fpr: float | None = None, strategy: str = "target_fpr",
                  labels: Any = None) -> Detector:
        """Choose the threshold again from new images, without retraining; returns self.

        ``strategy="target_fpr"`` (default): ``data`` are normal images not used for training
        (of labelled data only the normal ones are used); the threshold lets at most
        ``target_fpr`` of them through (default: this detector's ``target_fpr``, which a given
        value replaces). ``strategy="f1_max"``: ``data`` are labelled images, normal (0) and
        anomalous (1), as an ImageSet with labels, an MVTec-style folder (its test split) or
        images with ``labels=``; the threshold maximises F1 on them. Either way the score
        normalisation and the map colour scale follow from the same normal images, and all of
        it is saved with the model.
        """
        self._check_fitted()
        if strategy not in CALIBRATION_STRATEGIES:
            raise DistiladError(f"calibrate: strategy must be one of "
                                f"{', '.join(CALIBRATION_STRATEGIES)}, got {strategy!r}")
        images = as_image_set(data, split="test")
        if labels is not None:
            images = with_labels(images, labels)
        if strategy == "target_fpr":
            fpr = self.params["target_fpr"] if target_fpr is None else check_params(
                self.name, self.common_specs, {"target_fpr": target_fpr})["target_fpr"]
            if images.labels is not None:
                images = images.subset(np.flatnonzero(images.labels == 0))
            if len(images) == 0:
                raise DataError("calibrate: no normal (label 0) images in the data given")
            scores, maps = self._score(images)
            _check_finite(scores, "the calibration images")
            self.calibration = Calibration.from_holdout(scores, maps, fpr)
            self.params["target_fpr"] = fpr
        else:
            if target_fpr is not None:
                raise DistiladError("calibrate: target_fpr applies to strategy='target_fpr' only")
            if images.labels is None:
                raise DataError("calibrate(strategy='f1_max') needs labelled images: an ImageSet "
                                "with labels, an MVTec-style folder, or labels=[0, 1, ...]")
            scores, maps = self._score(images)
            _check_finite(scores, "the calibration images")
            self.calibration = Calibration.from_labelled(scores, images.labels, maps)
        self.fit_info["calibration"] = {"strategy": strategy, "n_images": len(images),
                                        "data": images.description}
        self._forget_threshold_metrics()
        return self

    @property
    def threshold(self) -> float:
        """The decision threshold in raw score units (score > threshold = anomalous).

        Setting it keeps the normalisation consistent (the threshold stays at 0.5 and the map
        colour scale mid-way); it must lie above the median normal score the normalisation
        starts from. Saved with the model.
        """
        return self._calibration().threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.calibration = self._calibration().with_threshold(value)
        self._forget_threshold_metrics()

    def _forget_threshold_metrics(self) -> None:
        """Drop the validation figures that depend on the old threshold (FPR / TPR at it): the
        validation images are not kept, so they cannot be recomputed; AUROCs stay valid."""
        val = self.fit_info.get("validation")
        if not val:
            return
        metrics = val.get("metrics") or {}
        dropped = [k for k in ("fpr_at_threshold", "tpr_at_threshold") if k in metrics]
        for k in dropped:
            del metrics[k]
        if dropped:
            val["note"] = "threshold changed after fit: FPR/TPR at the threshold not recomputed"

    def _calibration(self) -> Calibration:
        self._check_fitted()
        if self.calibration is None:
            raise NotFittedError("this detector has no calibration; fit it or call calibrate()")
        return self.calibration

    # --- scikit-learn names -------------------------------------------------------------------
    def score_samples(self, data: Any) -> np.ndarray:
        """scikit-learn convention: higher = more NORMAL, so this is minus ``score().image_scores``
        (N,), float64."""
        return -self.score(data).image_scores

    def decision_function(self, data: Any) -> np.ndarray:
        """scikit-learn convention: negative = outlier, i.e. ``threshold - image_score`` (N,).
        Note that :meth:`predict` returns 1 for anomalous and 0 for normal (not sklearn's -1/+1)."""
        threshold = self._calibration().threshold
        return threshold - self.score(data).image_scores

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """All arguments of this detector (defaults included), as scikit-learn's ``get_params``."""
        return dict(self.params)

    def set_params(self, **params: Any) -> Detector:
        """Change arguments (checked as at construction); returns self. On a fitted detector only
        the runtime arguments (``progress``, ``device``, ``score_batch_size``) may change: the
        others describe the trained networks (make a new detector to train with them)."""
        if self._fitted:
            frozen = sorted(k for k in params if k not in self.runtime_params
                            and params[k] != self.params.get(k))
            if frozen:
                raise DistiladError(
                    f"{self.name}: {', '.join(frozen)} cannot change on a fitted detector (the "
                    f"trained networks depend on it); use create_detector({self.name!r}, ...) "
                    f"and fit again")
        if "preset" in params and self.presets:
            # the preset's values replace the current ones (as at construction, this call's
            # other arguments win); "none" puts back the defaults of every preset-set argument
            defaults = self.default_params()
            touched = {k for values in self.presets.values() for k in values}
            params = {**{k: defaults[k] for k in touched},
                      **self.presets.get(str(params["preset"]), {}), **params}
        merged = self.checked_params({**self.params, **params})
        self.params = merged
        if "device" in params:
            self.device = resolve_device(merged["device"])
            if self._fitted:
                for module in self._modules().values():
                    module.to(self.device)
        return self

    def export_onnx(self, path: str | os.PathLike, overwrite: bool = False, check: bool = True
                    ) -> Path:
        """Write the whole inference path to an ONNX file: uint8 images (N, H, W, 3) in, image
        scores, maps (where the method has them), normalised scores, labels and the threshold
        out, the model description in the ONNX metadata. ``check`` runs the file with
        onnxruntime (where installed) against PyTorch on synthetic images. Needs
        ``pip install 'distilad[export]'``; see :mod:`distilad.export`."""
        from distilad.export import export_onnx

        return export_onnx(self, path, overwrite=overwrite, check=check)

    # --- persistence ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The JSON document stored with the weights."""
        from distilad import __version__

        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "method": self.name,
            "params": {k: v for k, v in self.params.items() if k != "device"},
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "fit_info": self.fit_info,
            "state": self._extra_state(),
            "library_version": __version__,
            "torch_version": torch.__version__,
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model to ``path`` (one .safetensors-format file; suffix ``.distilad``)."""
        from safetensors.torch import save_file

        self._check_fitted()
        path = Path(path)
        if path.exists() and not overwrite:
            raise DistiladError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
        tensors: dict[str, torch.Tensor] = {}
        for prefix, module in self._modules().items():
            for k, v in module.state_dict().items():
                tensors[f"{prefix}.{k}"] = v.detach().to("cpu").contiguous()
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"distilad": json.dumps(self.config())})
        return path


class PretrainedTeacher:
    """Glue for a method with a frozen pretrained teacher (``self.teacher``, with an ``identity``
    ``"name@weights_id"``) whose tensors are saved in the model file: when such a model is loaded
    the teacher is built with random weights (the file's tensors replace them) and keeps the
    weights fingerprint it was trained with, so its identity (cache keys) does not change.

    Mix in before :class:`Detector`; build the teacher from :meth:`_teacher_weights`, then call
    :meth:`_restore_teacher_id`; put ``teacher`` in ``_extra_state`` and call
    :meth:`_remember_teacher` from ``_load_extra_state``."""

    #: the saved teacher's weights fingerprint while a model file is loaded, else None
    _saved_teacher_id: str | None = None

    def _teacher_weights(self, weights: Any) -> Any:
        """The weights to build the teacher from: ``weights``, or "random" when loading."""
        return weights if self._saved_teacher_id is None else "random"

    def _restore_teacher_id(self, teacher: Any) -> None:
        """Give a teacher built while loading the fingerprint of the weights it was saved with."""
        if self._saved_teacher_id is not None:
            teacher.weights_id = self._saved_teacher_id

    def _remember_teacher(self, state: dict[str, Any]) -> None:
        """Note the saved teacher's fingerprint from ``state["teacher"]`` (``name@weights_id``)."""
        self._saved_teacher_id = state.get("teacher", "unknown").split("@")[-1]


def _check_finite(scores: np.ndarray, what: str) -> None:
    """Scores must be finite: NaN / inf mean the networks diverged (inputs are checked before)."""
    bad = int(np.count_nonzero(~np.isfinite(np.asarray(scores, dtype=np.float64))))
    if bad:
        raise DistiladError(f"the model gives non-finite scores for {bad} of {len(scores)} of "
                            f"{what}: training diverged (try a lower lr)")


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON document of a saved model, without loading tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for garbage input
        raise ModelFileError(f"{path} is not a distilad model file (unreadable: {e})") from e
    if "distilad" not in meta:
        raise ModelFileError(f"{path} is a safetensors file but not a distilad model")
    try:
        cfg = json.loads(meta["distilad"])
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: corrupt model description ({e})") from e
    if cfg.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not a distilad model file")
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer distilad (format "
                             f"{cfg['format_version']}); upgrade distilad")
    return cfg


def load_detector(path: str | os.PathLike, device: str = "auto") -> Detector:
    """Load a model written by :meth:`Detector.save` onto ``device``."""
    from safetensors.torch import load_file

    cfg = read_model_config(path)
    _import_methods()
    if cfg["method"] not in _REGISTRY:
        raise ModelFileError(f"{path}: unknown method {cfg['method']!r}")
    cls = _REGISTRY[cfg["method"]]
    params = {k: v for k, v in cfg["params"].items() if k not in cls.retired_params}
    det = cls.__new__(cls)
    # the weights file a model was trained from need not exist where it is loaded
    det._setup({**params, "device": device}, check_files=False)
    det._load_extra_state(cfg.get("state") or {})
    det._build()
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise ModelFileError(f"{path}: corrupt tensors ({e})") from e
    for prefix, module in det._modules().items():
        sub = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        try:
            module.load_state_dict(sub)
        except RuntimeError as e:
            raise ModelFileError(f"{path}: weights do not fit the {prefix} network ({e})") from e
        module.to(det.device)
    det.calibration = (None if cfg.get("calibration") is None
                       else Calibration.from_dict(cfg["calibration"]))
    det.fit_info = cfg.get("fit_info") or {}
    det._fitted = True
    return det
