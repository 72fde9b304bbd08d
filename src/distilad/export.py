"""ONNX export of the whole inference path: uint8 images in, scores, maps and labels out.

The graph (one file, opset 18, dynamic batch size, height and width):

- input ``images``: uint8 (N, H, W, 3), RGB, any H and W (all images of one call the same size);
  gray images are given as three equal channels.
- preprocessing, as :func:`distilad.data.transforms.to_tensor`: / 255, mean of the channels for
  one-channel models, bilinear resize with antialiasing to the model's square input size, clamp to
  [0, 1]; the teacher's own normalisation follows inside the teacher.
- the method's :class:`~distilad.modules.scoring.ScoringNet`: for RD teacher, student, anomaly
  map (per-scale 1 - cosine, upsampling, the Gaussian blur as fixed convolutions) and the image
  score; for EDE-GAN / P-KDGAN the (student) generator and the latent (or reconstruction) score;
  for Transformaly the block teacher, the cloned blocks and both Gaussian densities (float64).
- outputs: ``image_scores`` float32 (N,); ``anomaly_maps`` float32 (N, H, W) at input
  resolution (bilinear, as :func:`distilad.data.transforms.resize_map`; methods with maps only);
  ``normalized_scores`` float32 (N,) in [0, 1] with the threshold at 0.5; ``labels`` int64 (N,),
  1 = anomalous (score > threshold, compared in float64 as the Python path does); ``threshold``
  float64 scalar, raw score units.
- metadata_props: ``distilad`` (JSON: the model file's description, with method, arguments,
  calibration and library version, plus what the graph takes and gives and the export check),
  and for readers without JSON ``method``, ``image_size``, ``threshold``, ``library_version``.

Exported with ``torch.onnx.export(dynamo=True)`` (the TorchScript exporter has no antialiased
resize); this needs the ``onnx`` and ``onnxscript`` packages (``pip install 'distilad[export]'``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distilad.atomic import atomic_path
from distilad.calibration import Calibration
from distilad.errors import DistiladError, ExportError
from distilad.modules.scoring import ScoringNet

ONNX_FORMAT = "distilad-onnx"
ONNX_FORMAT_VERSION = 1
OPSET = 18  # the first with Resize(antialias=1)
INPUT_NAME = "images"
#: output names in graph order; "anomaly_maps" only for methods with maps.
OUTPUT_NAMES = ("image_scores", "anomaly_maps", "normalized_scores", "labels", "threshold")
#: the largest differences the export check (and tests/test_export.py) accept.
SCORE_RTOL = 1e-4
MAP_ATOL = 1e-3
INSTALL_HINT = "pip install 'distilad[export]'"


class DeployedGraph(nn.Module):
    """Preprocessing + scoring + calibration: uint8 (N, H, W, 3) -> the outputs listed in the
    module docstring (in :data:`OUTPUT_NAMES` order)."""

    def __init__(self, net: ScoringNet, calibration: Calibration):
        super().__init__()
        self.net = net
        self.median = float(calibration.median)
        self.span = float(calibration.threshold - calibration.median)
        self.register_buffer("threshold", torch.tensor(calibration.threshold, dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, w = images.shape[1], images.shape[2]
        size = self.net.image_size
        x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        if self.net.channels == 1:
            x = x.mean(1, keepdim=True)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True).clamp(0.0, 1.0)
        out = self.net(x)
        scores = out[0]
        # the calibration works in float64, as Calibration does; labels from a float64 score
        # (transformaly's) before it is rounded to float32, so they match the Python path
        s = scores.to(torch.float64)
        normalized = (0.5 * (s - self.median) / self.span).clamp(0.0, 1.0).to(torch.float32)
        labels = (s > self.threshold).to(torch.int64)
        maps: tuple[torch.Tensor, ...] = ()
        if self.net.has_maps:
            maps = (F.interpolate(out[1][:, None], size=(h, w), mode="bilinear",
                                  align_corners=False)[:, 0],)
        # float32 out even where the method scores in float64 (transformaly's densities)
        return (scores.to(torch.float32), *maps, normalized, labels, self.threshold)


def output_names(has_maps: bool) -> list[str]:
    """The graph's output names for a method with or without anomaly maps."""
    return [n for n in OUTPUT_NAMES if has_maps or n != "anomaly_maps"]


def export_onnx(det: Any, path: str | os.PathLike, overwrite: bool = False, check: bool = True
                ) -> Path:
    """Write ``det`` (a fitted, calibrated :class:`distilad.Detector`) to ``path`` as ONNX; see
    the module docstring. ``check``: run the file with onnxruntime (where installed) and compare
    with PyTorch on synthetic images; ExportError when they differ beyond :data:`SCORE_RTOL` /
    :data:`MAP_ATOL`. The check's figures are stored in the metadata (``export_check``); what
    was written (outputs, check) is also left in ``det.last_export``."""
    det._check_fitted()
    if det.calibration is None:
        raise ExportError("this model has no calibrated threshold to export; fit it or call "
                          "calibrate() first")
    path = Path(path)
    if path.exists() and not overwrite:
        raise DistiladError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    _require("onnx", "onnxscript")
    graph = DeployedGraph(copy.deepcopy(det._scoring_net()).to("cpu"), det.calibration).eval()
    program = _torch_export(graph)
    report = check_graph(graph, program.model_proto) if check else {"skipped": "check=False"}
    info = {"format": ONNX_FORMAT, "format_version": ONNX_FORMAT_VERSION,
            "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["N", "H", "W", 3],
                      "note": "RGB (gray as three equal channels); any H, W, resized inside"},
            "outputs": output_names(graph.net.has_maps),
            "has_maps": graph.net.has_maps, "image_size": graph.net.image_size,
            "channels": graph.net.channels, "export_check": report, "model": det.config()}
    meta = {"distilad": json.dumps(info), "method": det.name,
            "image_size": str(graph.net.image_size), "threshold": repr(det.calibration.threshold),
            "library_version": info["model"]["library_version"]}
    program.model.metadata_props.update(meta)
    program.model.producer_name = "distilad"
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    det.last_export = {k: v for k, v in info.items() if k != "model"}
    return path


def _torch_export(graph: DeployedGraph) -> Any:
    """``torch.onnx.export`` (dynamo) of ``graph`` with dynamic batch, height and width; its
    progress lines and warnings are kept off the console."""
    size = graph.net.image_size
    example = torch.zeros(2, size + 3, size + 5, 3, dtype=torch.uint8)
    dim = torch.export.Dim
    dynamic = {"images": {0: dim("batch"), 1: dim("height"), 2: dim("width")}}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers():
        warnings.simplefilter("ignore")
        try:
            return torch.onnx.export(graph, (example,), None, dynamo=True, opset_version=OPSET,
                                     input_names=[INPUT_NAME],
                                     output_names=output_names(graph.net.has_maps),
                                     dynamic_shapes=dynamic, verbose=False)
        except Exception as e:  # the exporter raises several types; say which step failed
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"ONNX export failed ({type(e).__name__}: {first})") from e


@contextlib.contextmanager
def _quiet_loggers(names: tuple[str, ...] = ("onnx_ir", "onnxscript", "torch.onnx")) -> Any:
    """The exporter's passes log notes (e.g. an initializer that is also an output) as
    warnings: show errors only while exporting."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def synthetic_images(size: int) -> list[np.ndarray]:
    """Seeded uint8 test batches for the export check: (2, S, S, 3) and one image of another
    size, (1, 3S/2 + 1, S - 5, 3), so that both resizes in the graph are exercised."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8),
            rng.integers(0, 256, (1, size * 3 // 2 + 1, max(size - 5, 8), 3), dtype=np.uint8)]


def check_graph(graph: DeployedGraph, model_proto: Any) -> dict[str, Any]:
    """Run ``model_proto`` with onnxruntime and ``graph`` with PyTorch on
    :func:`synthetic_images`; the largest differences, or why the check was skipped.
    ExportError when scores, maps or labels differ beyond the tolerances."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": f"onnxruntime not installed ({INSTALL_HINT})"}
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model_proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    score_rel = map_abs = norm_abs = 0.0
    labels_equal = True
    batches = synthetic_images(graph.net.image_size)
    for batch in batches:
        with torch.no_grad():
            want = dict(zip(names, (t.numpy() for t in graph(torch.from_numpy(batch))),
                            strict=True))
        got = dict(zip(names, session.run(None, {INPUT_NAME: batch}), strict=True))
        s_want = want["image_scores"].astype(np.float64)
        scale = max(float(np.abs(s_want).max()), 1e-12)
        score_rel = max(score_rel, float(np.abs(got["image_scores"] - s_want).max()) / scale)
        norm_abs = max(norm_abs, float(np.abs(got["normalized_scores"]
                                              - want["normalized_scores"]).max()))
        if "anomaly_maps" in want:
            map_abs = max(map_abs, float(np.abs(got["anomaly_maps"] - want["anomaly_maps"]).max()))
        labels_equal &= bool(np.array_equal(got["labels"], want["labels"]))
    report = {"images": sum(len(b) for b in batches), "max_score_rel_diff": score_rel,
              "max_normalized_abs_diff": norm_abs, "labels_equal": labels_equal,
              "onnxruntime": ort.__version__}
    if graph.net.has_maps:
        report["max_map_abs_diff"] = map_abs
    if score_rel > SCORE_RTOL or map_abs > MAP_ATOL or not labels_equal:
        raise ExportError(f"the exported graph differs from PyTorch on synthetic images (score "
                          f"{score_rel:.2g} relative, map {map_abs:.2g}, labels equal: "
                          f"{labels_equal}); not written")
    return report


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}")
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    if (major, minor) < (2, 6):
        raise ExportError(f"ONNX export needs torch >= 2.6 (its dynamo exporter), this is "
                          f"{torch.__version__}")
