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

from distilad.calibration import Calibration
from distilad.data import ImageSet, as_image_set
from distilad.errors import DataError, DistiladError, ModelFileError, NotFittedError

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


def create_detector(name: str, **params: Any) -> Detector:
    """A new, unfitted detector of method ``name`` with ``params`` (see each method's README)."""
    _import_methods()
    if name not in _REGISTRY:
        raise DistiladError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**params)


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
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU."""
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
    """Base class of all methods. Subclasses set ``name`` and ``defaults`` and implement
    ``_build`` (create networks from ``self.params``), ``_fit(train, holdout)``,
    ``_score(images) -> (scores, maps)`` and ``_modules`` (the networks to save)."""

    name: ClassVar[str] = ""
    #: every accepted argument with its default; unknown arguments are an error.
    defaults: ClassVar[dict[str, Any]] = {}
    #: arguments every method accepts.
    common_defaults: ClassVar[dict[str, Any]] = {
        "seed": 0,
        "device": "auto",
        "holdout_fraction": 0.1,
        "target_fpr": 0.01,
        "progress": True,
    }

    def __init__(self, **params: Any):
        allowed = {**self.common_defaults, **self.defaults}
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise DistiladError(
                f"{self.name}: unknown argument(s) {', '.join(unknown)}; accepted: "
                f"{', '.join(sorted(allowed))}")
        self.params: dict[str, Any] = {**allowed, **params}
        self.calibration: Calibration | None = None
        self.fit_info: dict[str, Any] = {}
        self.device = resolve_device(self.params["device"])
        self._fitted = False

    # --- to implement -------------------------------------------------------------------------
    def _build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, train: ImageSet, holdout: ImageSet) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def _score(self, images: ImageSet) -> tuple[np.ndarray, list[np.ndarray] | None]:
        raise NotImplementedError  # pragma: no cover

    def _modules(self) -> dict[str, torch.nn.Module]:  # pragma: no cover - abstract
        raise NotImplementedError

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
        from distilad.evaluate import resolve_validation, validation_report

        anomalies = resolve_validation(validation)  # a bad path fails before training
        images = as_image_set(data, split="train")
        if images.labels is not None and np.any(images.labels != 0):
            raise DataError("fit takes normal images only; the data given has anomalous labels")
        seed = int(self.params["seed"])
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        train_idx, hold_idx = holdout_split(len(images), self.params["holdout_fraction"], seed)
        train, holdout = images.subset(train_idx), images.subset(hold_idx)
        self._prepare(train)
        self._build()
        t0 = time.perf_counter()
        info = self._fit(train, holdout) or {}
        train_seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        scores, maps = self._score(holdout)
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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"distilad": json.dumps(self.config())})
        os.replace(tmp, path)
        return path


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
    det = _REGISTRY[cfg["method"]](**{**cfg["params"], "device": device})
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
