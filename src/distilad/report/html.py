"""The HTML test report: metrics, validation metrics, plots, colour bar and a grid of overlays.

``report.html`` is one self-contained file: CSS and SVG plots inline, the image panels embedded
as data URIs (JPEG), so it can be mailed or moved alone. When the embedded images would exceed
a size limit, the page links the PNGs in ``overlays/`` instead and says at the top that it needs
that folder. The PNG panels are written to ``overlays/`` in both cases.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Mapping, Sequence
from html import escape
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .metrics_doc import METRIC_LABELS, as_count, validation_caption
from .overlay import overlay_heatmap, save_png, shrink, side_by_side, to_rgb_uint8
from .plots import colorbar_svg, histogram_svg, roc_svg

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 1.4em; border-bottom: 1px solid #ccc; }
table.kv { border-collapse: collapse; margin: 0.5em 0; }
table.kv td, table.kv th { border: 1px solid #ccc; padding: 3px 10px; text-align: left; }
table.kv th { background: #eee; }
td.num { font-family: monospace; text-align: right; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.plots svg { background: white; border: 1px solid #ddd; }
.note { color: #555; font-size: 0.9em; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: white; border: 2px solid #ccc; border-radius: 4px; padding: 4px;
        font-size: 0.82em; max-width: 520px; }
.card img { display: block; max-width: 100%; height: auto; image-rendering: auto; }
.card.pred-anomalous { border-color: #d62728; }
.card.pred-normal { border-color: #1f77b4; }
.card.wrong { border-style: dashed; background: #fff3f3; }
.card .name { font-weight: bold; word-break: break-all; }
.card .meta span { margin-right: 0.8em; }
.wrongmark { color: #d62728; font-weight: bold; }
.needsfolder { background: #fff3cd; border: 1px solid #e0b000; padding: 0.6em; }
"""


def safe_stem(name: str, max_len: int = 80) -> str:
    """File-name-safe version of an image name (image extension dropped)."""
    stem = str(name)
    lower = stem.lower()
    for ext in _IMAGE_EXTS:
        if lower.endswith(ext):
            stem = stem[: -len(ext)]
            break
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return safe[:max_len] or "image"


def _fmt_value(v: Any) -> str:
    """A metric / extra value as text (None: n/a)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        if not math.isfinite(f):
            return "n/a"
        return f"{f:.4f}" if 1e-3 <= abs(f) < 1e5 or f == 0 else f"{f:.4g}"
    return str(v)


def _kv_table(d: Mapping[str, Any], header: tuple[str, str]) -> str:
    """Two-column table; ``n_*`` keys (counts) print as integers, known metrics get a label."""
    def name(k: Any) -> str:
        label = METRIC_LABELS.get(str(k))
        return f"{label} ({k})" if label else str(k)

    rows = "".join(
        f'<tr><td>{escape(name(k))}</td><td class="num">'
        f'{escape(_fmt_value(as_count(v) if str(k).startswith("n_") else v))}</td></tr>'
        for k, v in d.items()
    )
    return (
        f'<table class="kv"><tr><th>{escape(header[0])}</th><th>{escape(header[1])}</th></tr>'
        f"{rows}</table>"
    )


def _label_text(v: int) -> str:
    return {0: "normal", 1: "anomalous"}.get(int(v), "unknown")


def _check_len(name: str, seq: Sequence[Any] | np.ndarray | None, n: int) -> None:
    if seq is not None and len(seq) != n:
        raise ValueError(f"{name} has {len(seq)} entries for {n} scores")


def write_html_report(
    out_dir: str | PathLike[str],
    *,
    title: str,
    metrics: Mapping[str, Any],
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray | None] | None,
    masks: Sequence[np.ndarray | None] | None,
    names: Sequence[str],
    labels: np.ndarray | None,
    scores: np.ndarray,
    threshold: float | None,
    vmin: float,
    vmax: float,
    roc: tuple[np.ndarray, np.ndarray, float] | None = None,
    max_images: int = 200,
    extra: Mapping[str, Any] | None = None,
    max_side: int | None = 384,
    notes: Sequence[str] | None = None,
    validation: Mapping[str, Any] | None = None,
    embed_images: bool | None = None,
    max_embedded_mb: float = 30.0,
    progress: bool = False,
    map_threshold_is_image_threshold: bool = True,
) -> Path:
    """Write ``out_dir/report.html`` and one PNG per shown image in ``out_dir/overlays/``.

    Images are shown sorted by score, highest first; only the ``max_images`` highest-scoring
    ones get a card (and a PNG), and the page says so when the list was cut. Each panel is the
    image and its heatmap overlay side by side (ground-truth contour in green on the overlay
    when a mask exists), or just the image when ``maps`` is None. All heatmaps use the same
    fixed colour scale ``[vmin, vmax]``, drawn once as a colour bar above the grid.

    Args:
        out_dir: output folder (created).
        title: page title.
        metrics: test metric name -> value (None or NaN shows as n/a), shown as a table; keys
            ``n_*`` are counts and print as integers.
        images: N images, each (H, W, C) float32 in [0, 1] with C in {1, 3}, or uint8. Only
            the shown ones are accessed.
        maps: N anomaly maps (h, w) float (any resolution; resized to the image), an entry may
            be None; or None for no heatmaps at all.
        masks: N ground-truth masks (H', W') bool or None each; or None.
        names: N image names (escaped in the page, sanitised in file names).
        labels: (N,) ints, 0 = normal, 1 = anomalous (other values: unknown); or None.
        scores: (N,) image scores (NaN sorts last).
        threshold: decision threshold (score >= threshold is predicted anomalous), or None.
        vmin: lower end of the fixed heatmap colour scale.
        vmax: upper end of the fixed heatmap colour scale.
        roc: optional ``(fpr, tpr, auc)`` for an image-level ROC plot.
        max_images: maximum number of image cards.
        extra: optional name -> value pairs (method, model, data, colour scale...) shown as a
            small table.
        max_side: longer side in pixels of each panel in the PNGs (images are shrunk, never
            enlarged, before overlaying); None keeps full resolution.
        notes: sentences shown under the test metrics (e.g. why a metric is n/a).
        validation: ``Detector.fit_info["validation"]`` (``kind``, ``n_normal``,
            ``n_anomalous``, ``metrics``), shown in a table of its own; None: no such section.
        embed_images: True: embed every panel in the page; False: link the PNGs in
            ``overlays/``; None: embed unless the embedded data would exceed
            ``max_embedded_mb``.
        max_embedded_mb: size limit of the embedded images (base64 text, MB) when
            ``embed_images`` is None.
        progress: show a progress bar (stderr) while the panels are drawn.
        map_threshold_is_image_threshold: the image score is the maximum of the map, so the
            threshold is marked on the colour bar (a pixel above it flags the image); False
            (e.g. mean pooling) leaves it off the colour bar.

    Returns:
        Path of the written ``report.html``.
    """
    out = Path(out_dir)
    scores_arr = np.asarray(scores, dtype=np.float64).ravel()
    n = len(scores_arr)
    _check_len("names", names, n)
    _check_len("images", images, n)
    _check_len("maps", maps, n)
    _check_len("masks", masks, n)
    labels_arr = None if labels is None else np.asarray(labels).ravel().astype(np.int64)
    _check_len("labels", labels_arr, n)
    if not vmax >= vmin:
        raise ValueError(f"vmax ({vmax}) must be >= vmin ({vmin})")
    thr = float(threshold) if threshold is not None and math.isfinite(threshold) else None

    overlay_dir = out / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)

    # Highest scores first; NaN scores go last (argsort of -NaN puts them at the end).
    order = np.argsort(-scores_arr, kind="stable")
    shown = order[: max(int(max_images), 0)]

    pred = None if thr is None else (scores_arr >= thr).astype(np.int64)
    budget = math.inf if embed_images else max_embedded_mb * 1e6
    embedded: dict[int, str] | None = None if embed_images is False else {}
    embedded_bytes = 0
    panels: list[tuple[int, str]] = []
    for idx in tqdm(shown, desc="report images", unit="img", disable=not progress, leave=False):
        i = int(idx)
        rgb = shrink(to_rgb_uint8(images[i]), max_side)
        amap = None if maps is None else maps[i]
        if amap is not None:
            mask = None if masks is None else masks[i]
            ov = overlay_heatmap(rgb, amap, vmin, vmax, mask=mask)
            panel = side_by_side([rgb, ov])
        else:
            panel = rgb
        fname = f"{i}_{safe_stem(names[i])}.png"
        save_png(panel, overlay_dir / fname)
        panels.append((i, fname))
        if embedded is not None:
            uri = _jpeg_data_uri(panel)
            embedded_bytes += len(uri)
            if embedded_bytes > budget:
                embedded = None  # too big: link all panels instead (the page says so)
            else:
                embedded[i] = uri
    cards = [_card(i, str(names[i]), embedded[i] if embedded is not None else
                   f"overlays/{fname}", scores_arr[i], labels_arr, pred) for i, fname in panels]

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if embedded is None and panels:
        parts.append(
            '<p class="needsfolder"><b>This page needs its folder:</b> the images are the PNG '
            'files in <code>overlays/</code> beside <code>report.html</code>; keep the two '
            "together when moving or sharing the report"
            + (
                f" (embedding them would make the page larger than {max_embedded_mb:g} MB)"
                if embed_images is None
                else ""
            )
            + ".</p>"
        )
    parts += [
        f'<p class="note">{n} images'
        + (
            f", {int((labels_arr == 0).sum())} normal, {int((labels_arr == 1).sum())} anomalous"
            if labels_arr is not None
            else " (no labels)"
        )
        + (f"; threshold {escape(_fmt_value(thr))}" if thr is not None else "; no threshold")
        + ".</p>",
        "<h2>Test metrics</h2>",
        _kv_table(metrics, ("metric", "value")) if metrics else '<p class="note">none</p>',
    ]
    parts += [f'<p class="note">{escape(str(note))}</p>' for note in notes or ()]
    if labels_arr is not None and pred is not None:
        parts.append(_confusion(labels_arr, pred))
    parts.append(_validation_section(validation))
    if extra:
        parts += ["<h2>Run</h2>", _kv_table(extra, ("", ""))]

    parts.append('<h2>Scores</h2><div class="plots">')
    if roc is not None:
        fpr, tpr, auc = roc
        parts.append(roc_svg(fpr, tpr, float(auc), "Image-level ROC"))
    if labels_arr is not None:
        parts.append(
            histogram_svg(
                scores_arr[labels_arr == 0],
                scores_arr[labels_arr == 1],
                thr,
                "Image scores",
            )
        )
    else:
        parts.append(
            histogram_svg(scores_arr, [], thr, "Image scores", group_names=("all images", ""))
        )
    parts.append("</div>")

    parts.append("<h2>Images</h2>")
    if maps is not None:
        parts.append(
            colorbar_svg(vmin, vmax, thr if map_threshold_is_image_threshold else None,
                         "anomaly map colour scale (fixed for all images)")
        )
        parts.append(
            '<p class="note">Left: image; right: anomaly map overlay on the fixed scale '
            f"[{escape(_fmt_value(float(vmin)))}, {escape(_fmt_value(float(vmax)))}]"
            + ("; green line: ground-truth defect contour" if masks is not None else "")
            + ".</p>"
        )
    if len(shown) < n:
        parts.append(
            f'<p class="note"><b>Limited:</b> showing the {len(shown)} highest-scoring of '
            f"{n} images (max_images = {int(max_images)}).</p>"
        )
    else:
        parts.append(f'<p class="note">All {n} images, sorted by score (highest first).</p>')
    if embedded is not None and panels:
        parts.append(
            '<p class="note">Images are embedded in this page; full-quality PNG copies are in '
            "<code>overlays/</code>.</p>"
        )
    parts.append('<div class="grid">')
    parts += cards
    parts.append("</div></body></html>")

    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _jpeg_data_uri(rgb: np.ndarray, quality: int = 88) -> str:
    """(H, W, 3) uint8 as a ``data:image/jpeg;base64,...`` URI."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _validation_section(validation: Mapping[str, Any] | None) -> str:
    """The validation metrics of the model (from fit time), apart from the test metrics."""
    head = "<h2>Validation metrics (from fitting, no test data)</h2>"
    if not validation:
        return (head + '<p class="note">This model has no validation record (it was fitted '
                "without validation, or by an older version).</p>")
    caption = validation_caption(validation)
    metrics = validation.get("metrics") or {}
    return (
        head
        + f'<p class="note">{escape(caption[0].upper() + caption[1:])}. Synthetic defects are '
        "only a rough guide to real ones.</p>"
        + (_kv_table(metrics, ("metric", "value")) if metrics else '<p class="note">none</p>')
    )


def _confusion(labels: np.ndarray, pred: np.ndarray) -> str:
    """Counts of true/false positives/negatives at the threshold, as a small table."""
    known = (labels == 0) | (labels == 1)
    lab, pr = labels[known], pred[known]
    counts = {
        "true positives (anomalous, flagged)": int(((lab == 1) & (pr == 1)).sum()),
        "false negatives (anomalous, missed)": int(((lab == 1) & (pr == 0)).sum()),
        "true negatives (normal, passed)": int(((lab == 0) & (pr == 0)).sum()),
        "false positives (normal, flagged)": int(((lab == 0) & (pr == 1)).sum()),
    }
    return _kv_table(counts, ("at the threshold", "images"))


def _card(
    i: int,
    name: str,
    src: str,
    score: float,
    labels: np.ndarray | None,
    pred: np.ndarray | None,
) -> str:
    """One image card of the grid."""
    classes = ["card"]
    meta = [f"<span>score <b>{escape(_fmt_value(float(score)))}</b></span>"]
    label = None if labels is None else int(labels[i])
    if label is not None:
        meta.append(f"<span>label: {_label_text(label)}</span>")
    if pred is not None:
        p = int(pred[i])
        classes.append("pred-anomalous" if p == 1 else "pred-normal")
        meta.append(f"<span>predicted: {_label_text(p)}</span>")
        if label in (0, 1) and label != p:
            classes.append("wrong")
            meta.append('<span class="wrongmark">&#10007; wrong</span>')
    return (
        f'<div class="{" ".join(classes)}">'
        f'<img src="{escape(src)}" alt="{escape(name)}" loading="lazy">'
        f'<div class="name">#{i} {escape(name)}</div>'
        f'<div class="meta">{"".join(meta)}</div></div>'
    )
