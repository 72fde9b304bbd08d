"""Run a model exported by :mod:`distilad.export` with onnxruntime, as a Detector is run.

:class:`OnnxModel` reads the ONNX file and its metadata and offers ``score`` / ``predict`` with
the same inputs and :class:`~distilad.detector.ScoreResult` as a loaded ``.distilad`` model, so
``distilad predict model.onnx ...`` writes the same files. Images are read by the same code as
for PyTorch and handed to the graph as uint8 RGB at their own size; the graph resizes them.
Needs only ``onnxruntime`` (not torch's exporter).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from distilad.calibration import Calibration
from distilad.detector import ScoreResult
from distilad.errors import DistiladError, ModelFileError, NotFittedError
from distilad.export import INPUT_NAME, INSTALL_HINT, ONNX_FORMAT, ONNX_FORMAT_VERSION, output_names

#: images per onnxruntime call when the model's description names none.
DEFAULT_BATCH_SIZE = 16


def is_onnx_path(path: str | os.PathLike) -> bool:
    """True for a path named ``*.onnx`` (how the CLI tells the two model formats apart)."""
    return Path(path).suffix.lower() == ".onnx"


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """float32 (H, W, C) in [0, 1], C in {1, 3} (as the image readers give) -> uint8 (H, W, 3).

    Exact for 8-bit sources (their values are k / 255); 16-bit images are rounded to 8 bits.
    """
    a = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


class OnnxModel:
    """An exported model run by onnxruntime. ``score``, ``predict``, ``calibration``, ``params``,
    ``name``, ``fit_info`` and ``config()`` behave as a loaded :class:`distilad.Detector`'s.

    ``device``: "auto" / "cpu" (onnxruntime's CPU provider) or "cuda" (its CUDA provider, where
    the onnxruntime build has one). ``threads``: onnxruntime's intra-op threads (None: its
    default, one per physical core).
    """

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None):
        ort = _onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"model file not found: {self.path}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=_providers(ort, device))
        except DistiladError:
            raise
        except Exception as e:  # onnxruntime raises its own types for garbage and bad graphs
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelFileError(f"{self.path} is not a readable ONNX model ({first})") from e
        self.info = _read_info(self.path, self.session.get_modelmeta().custom_metadata_map)
        self._check_signature()
        cfg = self.info["model"]
        self.name: str = cfg["method"]
        self.params: dict[str, Any] = {**cfg.get("params", {}), "progress": False}
        self.fit_info: dict[str, Any] = cfg.get("fit_info") or {}
        cal = cfg.get("calibration")
        if cal is None:
            raise ModelFileError(f"{self.path}: no calibration in its description")
        self.calibration = Calibration.from_dict(cal)
        self.has_maps = bool(self.info["has_maps"])
        self.image_size = int(self.info["image_size"])
        self._measurements: dict[int, dict[str, Any]] = {}
        self.batch_measurement: dict[str, Any] | None = None

    def _check_signature(self) -> None:
        """The graph takes and gives what its description says (else the file was edited or
        made by something else): ModelFileError otherwise."""
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        want = output_names(bool(self.info.get("has_maps")))
        ok_input = (len(inputs) == 1 and inputs[0].name == INPUT_NAME
                    and inputs[0].type == "tensor(uint8)" and len(inputs[0].shape) == 4
                    and inputs[0].shape[3] == 3)
        if not ok_input or outputs != want:
            got_in = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise ModelFileError(
                f"{self.path}: its graph does not match its distilad description (inputs: "
                f"{got_in}; outputs: {', '.join(outputs)}; expected {INPUT_NAME} uint8 "
                f"[N, H, W, 3] -> {', '.join(want)}); export it again with `distilad export`")

    def config(self) -> dict[str, Any]:
        """The description of the model the graph was exported from (as ``Detector.config``)."""
        return self.info["model"]

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def score(self, data: Any, batch_size: int | None = None) -> ScoreResult:
        """Scores (and maps at input resolution) of ``data`` (anything
        :func:`distilad.data.as_image_set` takes); see :class:`distilad.ScoreResult`.
        Consecutive images of the same size share one onnxruntime call of up to ``batch_size``
        images (default: the model's ``score_batch_size``, measured for ``"auto"``)."""
        from distilad.data import as_image_set

        images = as_image_set(data, split="test")
        bs = int(batch_size or self._batch_size(len(images)))
        names = output_names(self.has_maps)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names if n != "threshold"}
        seconds = 0.0
        for idx in _same_size_runs(images, bs):
            batch = np.stack([to_uint8_rgb(images.image(i)) for i in idx])
            t0 = time.perf_counter()
            out = self.session.run(None, {INPUT_NAME: batch})
            seconds += time.perf_counter() - t0
            for name, value in zip(names, out, strict=True):
                if name in parts:
                    parts[name].append(value)

        def cat(name: str, dtype: Any) -> np.ndarray:
            return (np.concatenate(parts[name]).astype(dtype) if parts[name]
                    else np.zeros(0, dtype))

        maps: np.ndarray | list[np.ndarray] | None = None
        if self.has_maps:
            flat = [m for chunk in parts["anomaly_maps"] for m in chunk]
            maps = (np.stack(flat) if len({m.shape for m in flat}) == 1
                    else flat if flat else np.zeros((0, 0, 0), np.float32))
        return ScoreResult(image_scores=cat("image_scores", np.float64), anomaly_maps=maps,
                           names=list(images.names),
                           normalized_scores=cat("normalized_scores", np.float64),
                           labels=cat("labels", np.int64), seconds=seconds)

    def _batch_size(self, n_images: int) -> int:
        """The model's ``score_batch_size``; for ``"auto"`` measured with onnxruntime on this
        machine (:mod:`distilad.autobatch`, figures left in ``batch_measurement``)."""
        from distilad.autobatch import CPU_CANDIDATES, GPU_CANDIDATES, batch_size_for, choose_batch_size

        value = self.params.get("score_batch_size", DEFAULT_BATCH_SIZE)
        if value != "auto":
            return int(value)
        if n_images <= 1:
            return 1
        bucket = 1 << (int(n_images) - 1).bit_length()
        usable = [b for b in self._measurements if b >= bucket]  # made for more images: serves
        if not usable:
            size = self.image_size
            on_gpu = self.session.get_providers()[0] != "CPUExecutionProvider"

            def run(b: int) -> None:
                self.session.run(None, {INPUT_NAME: np.zeros((b, size, size, 3), np.uint8)})

            self._measurements[bucket] = choose_batch_size(
                run, GPU_CANDIDATES if on_gpu else CPU_CANDIDATES, bucket)
            usable = [bucket]
        self.batch_measurement = self._measurements[min(usable)]
        return batch_size_for(self.batch_measurement, n_images)

    def predict(self, data: Any) -> np.ndarray:
        """0 (normal) / 1 (anomalous) per image, by the threshold inside the graph."""
        labels = self.score(data).labels
        if labels is None:  # pragma: no cover - the graph always has labels
            raise NotFittedError("this model has no calibration")
        return labels


def _same_size_runs(images: Any, batch_size: int) -> list[list[int]]:
    """Consecutive indices of equal (H, W), at most ``batch_size`` per run, in order."""
    runs: list[list[int]] = []
    last = None
    for i in range(len(images)):
        shape = tuple(images.image_shape(i))
        if runs and shape == last and len(runs[-1]) < batch_size:
            runs[-1].append(i)
        else:
            runs.append([i])
        last = shape
    return runs


def _read_info(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    """The ``distilad`` metadata entry of an exported graph, checked."""
    if "distilad" not in meta:
        raise ModelFileError(f"{path} is an ONNX model but not one exported by distilad (no "
                             f"distilad metadata); export a model with `distilad export`")
    try:
        info = json.loads(meta["distilad"])
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: corrupt distilad metadata ({e})") from e
    if not isinstance(info, dict) or info.get("format") != ONNX_FORMAT or "model" not in info:
        raise ModelFileError(f"{path}: its distilad metadata is not an export description")
    if int(info.get("format_version", 0)) > ONNX_FORMAT_VERSION:
        raise ModelFileError(f"{path} was exported by a newer distilad (format "
                             f"{info['format_version']}); upgrade distilad")
    return info


def _providers(ort: Any, device: str) -> list[str]:
    available = ort.get_available_providers()
    if device in ("auto", "cpu"):
        prefer = ["CUDAExecutionProvider"] if device == "auto" else []
        return [p for p in prefer if p in available] + ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise DistiladError("this onnxruntime has no CUDA provider (install onnxruntime-gpu); "
                                "use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise DistiladError(f"device {device!r} is not available for ONNX models; use cpu or cuda")


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise DistiladError(f"running an .onnx model needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime
