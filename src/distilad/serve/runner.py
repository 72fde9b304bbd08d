"""One model, one scoring thread: decode, score and draw the overlay of uploaded images.

Scoring is CPU-bound (and a model is not safe to call from two threads at once), so the server
runs :meth:`ModelRunner.predict` in worker threads that decode in parallel and then hand the
image to a single scoring thread, in arrival order (a queue of one worker: the model always
runs in the same thread, so per-thread caches of the math libraries are made once and memory
stays flat under load). At most ``max_pending`` requests may wait for it; one more is refused
with 503 at once instead of queueing without bound (nothing accepted is dropped).
"""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from distilad.serve.uploads import OneImage, UploadError, UploadLimits, check_content_type, decode_image

#: default number of requests that may wait for the model at once.
DEFAULT_MAX_PENDING = 64
#: longest side of the returned overlay panel's image (larger uploads are shrunk for it).
OVERLAY_MAX_SIDE = 512


class ModelRunner:
    """``model``: a loaded :class:`distilad.Detector` or :class:`distilad.onnx_model.OnnxModel`
    (anything with ``score``, ``calibration``, ``params``, ``name``, ``config()``), calibrated.
    ``source``: the file it was loaded from (its name is reported by :meth:`info`)."""

    def __init__(self, model: Any, limits: UploadLimits | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING, source: str | Path | None = None):
        from distilad.errors import DistiladError

        if getattr(model, "calibration", None) is None:
            raise DistiladError("the model has no calibrated threshold; fit it with `distilad "
                                "fit` (or call det.calibrate) before serving it")
        self.model = model
        self.model.params["progress"] = False
        self.limits = limits or UploadLimits.default()
        self.max_pending = int(max_pending)
        self.source = None if source is None else Path(source)
        self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distilad-score")
        self._count_lock = threading.Lock()
        self._pending = 0
        self.served = 0

    @property
    def pending(self) -> int:
        """Requests now waiting for or holding the model."""
        return self._pending

    def _enter(self) -> None:
        with self._count_lock:
            if self._pending >= self.max_pending:
                raise UploadError(f"server busy: {self._pending} requests are waiting for the "
                                  f"model; retry later", status=503)
            self._pending += 1

    def _leave(self) -> None:
        with self._count_lock:
            self._pending -= 1

    def predict(self, data: bytes, filename: str, content_type: str | None,
                overlay: bool = False) -> dict[str, Any]:
        """Score one uploaded file (blocking; call from a worker thread).

        Returns the JSON-able prediction: ``file``, ``score`` (raw, higher = more anomalous),
        ``normalized_score`` (0..1, threshold at 0.5), ``label`` ("anomalous" / "normal"),
        ``threshold`` (raw units), ``image_size`` ([H, W]), ``timing_ms`` (``decode``, ``wait``
        for the model, ``score``, ``overlay``, ``total``) and, when ``overlay``, ``overlay_png``:
        the image, its heatmap overlay and the colour bar as one base64 PNG (None for methods
        without anomaly maps). Raises UploadError for bad uploads and a busy server.
        """
        t0 = time.perf_counter()
        check_content_type(content_type, filename)
        image = decode_image(data, filename, self.limits)
        t_decoded = time.perf_counter()
        self._enter()
        try:
            t_started, result = self._scorer.submit(self._score, image, filename).result()
        finally:
            self._leave()
        t_scored = time.perf_counter()
        cal = self.model.calibration
        score = float(result.image_scores[0])
        out: dict[str, Any] = {
            "file": filename,
            "score": score,
            "normalized_score": float(result.normalized_scores[0]),
            "label": "anomalous" if int(result.labels[0]) == 1 else "normal",
            "threshold": float(cal.threshold),
            "image_size": [int(image.shape[0]), int(image.shape[1])],
        }
        if overlay:
            out["overlay_png"] = self._overlay_png(image, result)
        t_end = time.perf_counter()
        out["timing_ms"] = {
            "decode": _ms(t_decoded - t0), "wait": _ms(t_started - t_decoded),
            "score": _ms(t_scored - t_started), "overlay": _ms(t_end - t_scored) if overlay else 0.0,
            "total": _ms(t_end - t0)}
        return out

    def _score(self, image: np.ndarray, filename: str) -> tuple[float, Any]:
        """(start time, ScoreResult) of one image; runs in the scoring thread only."""
        started = time.perf_counter()
        result = self.model.score(OneImage(image, filename))
        self.served += 1
        return started, result

    def close(self) -> None:
        """Stop the scoring thread (after the requests already handed to it)."""
        self._scorer.shutdown(wait=True)

    def _overlay_png(self, image: np.ndarray, result: Any) -> str | None:
        """Image | heatmap overlay | colour bar (fixed scale from calibration) as base64 PNG."""
        from distilad.report import image_map_panel

        cal = self.model.calibration
        if result.anomaly_maps is None or cal.map_vmin is None:
            return None
        # the image threshold is in map units when the image score is the map's maximum
        map_threshold = cal.threshold if self.model.params.get("image_score", "max") == "max" else None
        panel = image_map_panel(image, result.anomaly_maps[0], cal.map_vmin, cal.map_vmax,
                                map_threshold, max_side=OVERLAY_MAX_SIDE)
        buf = io.BytesIO()
        Image.fromarray(panel).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")

    def info(self) -> dict[str, Any]:
        """The model's description for ``GET /model``: method, input size, calibration,
        arguments, the library version that wrote it and the one serving it, fit summary."""
        import distilad
        from distilad.jsonsafe import to_strict
        from distilad.onnx_model import OnnxModel

        cfg = self.model.config()
        params = {k: v for k, v in cfg.get("params", {}).items() if k not in ("progress", "device")}
        fit_info = cfg.get("fit_info") or {}
        validation = fit_info.get("validation") or {}
        return to_strict({
            "file": None if self.source is None else self.source.name,
            "format": "onnx" if isinstance(self.model, OnnxModel) else "distilad",
            "method": cfg.get("method"),
            "image_size": params.get("image_size"),
            "has_maps": self.model.calibration.map_vmin is not None,
            "calibration": self.model.calibration.to_dict(),
            "threshold": float(self.model.calibration.threshold),
            "params": params,
            "fit": {k: fit_info[k] for k in ("n_train", "n_holdout", "train_seconds")
                    if k in fit_info},
            "validation_metrics": validation.get("metrics"),
            "model_library_version": cfg.get("library_version"),
            "library_version": distilad.__version__,
            "limits": {"max_upload_bytes": self.limits.max_bytes,
                       "max_pixels": self.limits.max_pixels, "max_pending": self.max_pending},
        })


def _ms(seconds: float) -> float:
    return round(1000.0 * seconds, 2)
