"""Small self-contained SVG plots (ROC curve, score histogram, colour bar) for the HTML report.

Every function returns one ``<svg>`` element as a string that is well-formed XML, so it can be
inlined in HTML or parsed with :mod:`xml.etree.ElementTree`. No plotting library is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

from .overlay import LUT

NORMAL_COLOR = "#1f77b4"
ANOMALOUS_COLOR = "#d62728"
THRESHOLD_COLOR = "#222222"
_FONT = 'font-family="sans-serif"'

# Plot geometry (pixels): full size and margins around the axes box.
_W, _H = 380, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 16, 30, 44


def _fmt(v: float) -> str:
    """Short number for tick labels."""
    if not math.isfinite(v):
        return "n/a"
    if v == 0:
        return "0"
    return f"{v:.3g}"


def _attr(v: float) -> str:
    """Coordinate for an SVG attribute."""
    return f"{v:.2f}"


def _svg_open(width: int, height: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT} font-size="11">'
    )


def _title(text: str, width: int) -> str:
    return (
        f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{escape(text)}</text>'
    )


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (both inside)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


class _Axes:
    """Maps data coordinates to the plot box and draws axes with ticks."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float):
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1
        self.px0, self.px1 = _LEFT, _W - _RIGHT
        self.py0, self.py1 = _H - _BOTTOM, _TOP  # y grows upwards in data space

    def x(self, v: float) -> float:
        return self.px0 + (v - self.x0) / (self.x1 - self.x0) * (self.px1 - self.px0)

    def y(self, v: float) -> float:
        return self.py0 + (v - self.y0) / (self.y1 - self.y0) * (self.py1 - self.py0)

    def frame(
        self, xticks: Sequence[float], yticks: Sequence[float], xlabel: str, ylabel: str
    ) -> list[str]:
        parts = [
            f'<rect x="{self.px0}" y="{self.py1}" width="{self.px1 - self.px0}" '
            f'height="{self.py0 - self.py1}" fill="white" stroke="#444" stroke-width="1"/>'
        ]
        for t in xticks:
            x = _attr(self.x(t))
            parts.append(
                f'<line x1="{x}" y1="{self.py0}" x2="{x}" y2="{self.py0 + 4}" stroke="#444"/>'
            )
            parts.append(f'<text x="{x}" y="{self.py0 + 15}" text-anchor="middle">{_fmt(t)}</text>')
        for t in yticks:
            y = _attr(self.y(t))
            parts.append(
                f'<line x1="{self.px0 - 4}" y1="{y}" x2="{self.px0}" y2="{y}" stroke="#444"/>'
            )
            parts.append(
                f'<text x="{self.px0 - 6}" y="{y}" text-anchor="end" '
                f'dominant-baseline="middle">{_fmt(t)}</text>'
            )
        cx = (self.px0 + self.px1) / 2
        cy = (self.py0 + self.py1) / 2
        parts.append(
            f'<text x="{cx:.1f}" y="{_H - 8}" text-anchor="middle">{escape(xlabel)}</text>'
        )
        parts.append(
            f'<text x="14" y="{cy:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {cy:.1f})">{escape(ylabel)}</text>'
        )
        return parts


def roc_svg(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str) -> str:
    """ROC curve as an SVG string.

    Args:
        fpr: (K,) false-positive rates in [0, 1], in curve order.
        tpr: (K,) true-positive rates in [0, 1], same length as ``fpr``.
        auc: area under the curve, shown in the title (NaN shows as "n/a").
        title: plot title (escaped).

    Returns:
        An ``<svg>`` element with axes (ticks 0..1), the chance diagonal and the curve.
    """
    f = np.asarray(fpr, dtype=np.float64).ravel()
    t = np.asarray(tpr, dtype=np.float64).ravel()
    if f.shape != t.shape:
        raise ValueError(f"fpr and tpr differ in length: {f.shape} vs {t.shape}")
    ok = np.isfinite(f) & np.isfinite(t)
    f, t = np.clip(f[ok], 0, 1), np.clip(t[ok], 0, 1)
    ax = _Axes(0.0, 1.0, 0.0, 1.0)
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    auc_text = f"{auc:.4f}" if auc is not None and math.isfinite(auc) else "n/a"
    parts = [_svg_open(_W, _H), _title(f"{title} (AUC = {auc_text})", _W)]
    parts += ax.frame(ticks, ticks, "false positive rate", "true positive rate")
    parts.append(
        f'<line x1="{_attr(ax.x(0))}" y1="{_attr(ax.y(0))}" x2="{_attr(ax.x(1))}" '
        f'y2="{_attr(ax.y(1))}" stroke="#999" stroke-dasharray="4 3"/>'
    )
    if f.size:
        pts = " ".join(f"{_attr(ax.x(a))},{_attr(ax.y(b))}" for a, b in zip(f, t, strict=True))
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{ANOMALOUS_COLOR}" stroke-width="2"/>'
        )
    else:
        parts.append(
            f'<text x="{_attr(ax.x(0.5))}" y="{_attr(ax.y(0.5))}" text-anchor="middle">'
            "no ROC data</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(
    scores_normal: np.ndarray | Sequence[float],
    scores_anomalous: np.ndarray | Sequence[float],
    threshold: float | None,
    title: str,
    bins: int = 30,
    *,
    group_names: tuple[str, str] = ("normal", "anomalous"),
) -> str:
    """Overlaid histograms of two score groups as an SVG string.

    Both groups share the same bin edges, spanning all finite scores and the threshold.
    Either group may be empty (e.g. unlabelled data: pass all scores as the first group and
    ``group_names=("all", "")``); non-finite scores are ignored.

    Args:
        scores_normal: (N0,) image scores of the first group (blue).
        scores_anomalous: (N1,) image scores of the second group (red).
        threshold: decision threshold drawn as a dashed vertical line with a label, or None.
        title: plot title (escaped).
        bins: number of bins.
        group_names: legend names of the two groups.

    Returns:
        An ``<svg>`` element.
    """
    groups = [np.asarray(s, dtype=np.float64).ravel() for s in (scores_normal, scores_anomalous)]
    groups = [g[np.isfinite(g)] for g in groups]
    thr = float(threshold) if threshold is not None and math.isfinite(threshold) else None
    values = np.concatenate(groups + ([np.array([thr])] if thr is not None else []))
    bins = max(int(bins), 1)
    parts = [_svg_open(_W, _H), _title(title, _W)]
    if values.size == 0:
        ax = _Axes(0.0, 1.0, 0.0, 1.0)
        parts += ax.frame([], [], "score", "count")
        parts.append(
            f'<text x="{_attr(ax.x(0.5))}" y="{_attr(ax.y(0.5))}" text-anchor="middle">'
            "no scores</text></svg>"
        )
        return "".join(parts)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        pad = max(abs(lo) * 0.05, 0.5)
        lo, hi = lo - pad, hi + pad
    else:
        pad = (hi - lo) * 0.02
        lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(g, bins=edges)[0] for g in groups]
    cmax = max(int(max(c.max() for c in counts)), 1)
    yticks = [v for v in _nice_ticks(0.0, float(cmax), 5) if float(v).is_integer()] or [0.0]
    ymax = max(float(cmax), yticks[-1]) * 1.08
    ax = _Axes(lo, hi, 0.0, ymax)
    parts += ax.frame(_nice_ticks(lo, hi, 5), yticks, "score", "count")
    for c, color in zip(counts, (NORMAL_COLOR, ANOMALOUS_COLOR), strict=True):
        for k in np.nonzero(c)[0]:
            x0, x1 = ax.x(edges[k]), ax.x(edges[k + 1])
            y = ax.y(float(c[k]))
            parts.append(
                f'<rect x="{_attr(x0)}" y="{_attr(y)}" width="{_attr(x1 - x0)}" '
                f'height="{_attr(ax.py0 - y)}" fill="{color}" fill-opacity="0.5" '
                f'stroke="{color}" stroke-width="0.5"/>'
            )
    if thr is not None:
        x = _attr(ax.x(thr))
        parts.append(
            f'<line x1="{x}" y1="{ax.py0}" x2="{x}" y2="{ax.py1}" stroke="{THRESHOLD_COLOR}" '
            'stroke-width="1.5" stroke-dasharray="5 3"/>'
        )
        right_half = ax.x(thr) > (ax.px0 + ax.px1) / 2
        anchor, dx = ("end", -4) if right_half else ("start", 4)
        parts.append(
            f'<text x="{_attr(ax.x(thr) + dx)}" y="{ax.py1 + 12}" text-anchor="{anchor}">'
            f"threshold = {escape(_fmt(thr))}</text>"
        )
    # Legend (top right inside the box), one entry per named group with its count.
    ly = ax.py1 + 24
    for g, name, color in zip(groups, group_names, (NORMAL_COLOR, ANOMALOUS_COLOR), strict=True):
        if not name:
            continue
        parts.append(
            f'<rect x="{ax.px1 - 110}" y="{ly - 8}" width="10" height="10" fill="{color}" '
            'fill-opacity="0.5"/>'
        )
        parts.append(f'<text x="{ax.px1 - 96}" y="{ly + 1}">{escape(name)} (n={g.size})</text>')
        ly += 14
    parts.append("</svg>")
    return "".join(parts)


def colorbar_svg(
    vmin: float,
    vmax: float,
    threshold: float | None = None,
    title: str = "anomaly map colour scale",
    width: int = 460,
    height: int = 72,
) -> str:
    """Horizontal colour bar of the report colormap from ``vmin`` to ``vmax``.

    Args:
        vmin: value at the left end (first colour).
        vmax: value at the right end (last colour).
        threshold: marked with a black tick and label when given; a threshold outside
            ``[vmin, vmax]`` is drawn at the nearest end and labelled as out of scale.
        title: caption above the bar (escaped).
        width: SVG width in pixels.
        height: SVG height in pixels.

    Returns:
        An ``<svg>`` element with a linear gradient sampled from the colormap.
    """
    x0, x1 = 12.0, width - 12.0
    y0, y1 = 32.0, 50.0
    stops = []
    n = 16
    for k in range(n + 1):
        r, g, b = (int(v) for v in LUT[round(k / n * (len(LUT) - 1))])
        stops.append(f'<stop offset="{k / n:.4f}" stop-color="rgb({r},{g},{b})"/>')
    parts = [
        _svg_open(width, height),
        f'<defs><linearGradient id="distilad-cbar" x1="0" y1="0" x2="1" y2="0">'
        f"{''.join(stops)}</linearGradient></defs>",
        f'<text x="{x0}" y="14" font-size="12">{escape(title)}</text>',
        f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" '
        'fill="url(#distilad-cbar)" stroke="#444"/>',
    ]
    span = vmax - vmin if vmax > vmin else 1.0
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        x = x0 + frac * (x1 - x0)
        v = vmin + frac * span
        parts.append(
            f'<line x1="{_attr(x)}" y1="{y1}" x2="{_attr(x)}" y2="{y1 + 4}" stroke="#444"/>'
        )
        parts.append(f'<text x="{_attr(x)}" y="{y1 + 15}" text-anchor="{anchor}">{_fmt(v)}</text>')
    if threshold is not None and math.isfinite(threshold):
        frac = (float(threshold) - vmin) / span
        out_of_scale = not 0.0 <= frac <= 1.0
        frac = min(max(frac, 0.0), 1.0)
        x = x0 + frac * (x1 - x0)
        label = f"threshold = {_fmt(float(threshold))}" + (
            " (out of scale)" if out_of_scale else ""
        )
        anchor = "end" if frac > 0.5 else "start"
        parts.append(
            f'<line x1="{_attr(x)}" y1="{y0 - 3}" x2="{_attr(x)}" y2="{y1 + 3}" '
            'stroke="black" stroke-width="2"/>'
        )
        parts.append(
            f'<text x="{_attr(x)}" y="{y0 - 4}" text-anchor="{anchor}" font-weight="bold">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
