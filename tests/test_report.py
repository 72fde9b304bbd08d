"""Tests for distilad.report: colour scale, overlays, contours, SVG plots and the HTML page."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilad.report import colorize, overlay_heatmap, save_png, write_html_report
from distilad.report.overlay import CONTOUR_COLOR, LUT, contour_pixels
from distilad.report.plots import colorbar_svg, histogram_svg, roc_svg

SVG = "{http://www.w3.org/2000/svg}"


def test_colorize_fixed_scale() -> None:
    a = np.array([[0.0, 0.5], [1.0, 2.0]])
    b = np.array([[0.5, 100.0], [-50.0, 0.25]])  # very different range
    ca, cb = colorize(a, 0.0, 1.0), colorize(b, 0.0, 1.0)
    assert ca.shape == (2, 2, 3) and ca.dtype == np.uint8
    # same value -> same colour whatever the other values of the map
    np.testing.assert_array_equal(ca[0, 1], cb[0, 0])
    # clipping: beyond vmax is the top colour, below vmin the bottom colour
    np.testing.assert_array_equal(ca[1, 0], LUT[-1])
    np.testing.assert_array_equal(ca[1, 1], LUT[-1])
    np.testing.assert_array_equal(cb[0, 1], LUT[-1])
    np.testing.assert_array_equal(cb[1, 0], LUT[0])
    np.testing.assert_array_equal(ca[0, 0], LUT[0])
    # not a per-image min-max: a constant map is not stretched
    const = colorize(np.full((3, 3), 0.5), 0.0, 1.0)
    np.testing.assert_array_equal(const[0, 0], ca[0, 1])
    # the colormap goes somewhere: low, mid and high colours differ
    assert len({tuple(LUT[0]), tuple(LUT[128]), tuple(LUT[255])}) == 3


def test_colorize_rejects_bad_scale_and_handles_nan() -> None:
    with pytest.raises(ValueError):
        colorize(np.zeros((2, 2)), 1.0, 0.0)
    out = colorize(np.array([[np.nan, 0.0]]), 0.0, 1.0)
    np.testing.assert_array_equal(out[0, 0], out[0, 1])
    colorize(np.zeros((2, 2)), 0.3, 0.3)  # degenerate scale does not crash


def test_overlay_shape_dtype_and_resize() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((32, 40, 3), dtype=np.float32)
    amap = rng.random((8, 10)).astype(np.float32)
    out = overlay_heatmap(img, amap, 0.0, 1.0)
    assert out.shape == (32, 40, 3) and out.dtype == np.uint8
    # alpha=1 gives the pure heatmap, alpha=0 the image
    full = overlay_heatmap(img, np.full((32, 40), 2.0), 0.0, 1.0, alpha=1.0)
    assert (full == LUT[-1]).all()
    none = overlay_heatmap(img, amap, 0.0, 1.0, alpha=0.0)
    np.testing.assert_array_equal(none, np.round(img * 255).astype(np.uint8))


def test_overlay_gray_and_uint8_input() -> None:
    gray = np.full((16, 16, 1), 0.5, dtype=np.float32)
    out = overlay_heatmap(gray, np.zeros((16, 16)), 0.0, 1.0, alpha=0.0)
    assert out.shape == (16, 16, 3)
    assert (out == 128).all()
    u8 = np.full((16, 16, 3), 200, dtype=np.uint8)
    out8 = overlay_heatmap(u8, np.zeros((4, 4)), 0.0, 1.0, alpha=0.0)
    assert (out8 == 200).all()
    out2d = overlay_heatmap(np.zeros((16, 16), dtype=np.float32), np.zeros((16, 16)), 0, 1)
    assert out2d.shape == (16, 16, 3)


def test_contour_exactly_at_mask_boundary() -> None:
    img = np.zeros((20, 20, 3), dtype=np.float32)
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:15, 6:12] = True
    # colour the heatmap away from green: everything below vmin -> dark LUT[0]
    out = overlay_heatmap(img, np.zeros((20, 20)), 1.0, 2.0, mask=mask)
    green = np.all(out == np.array(CONTOUR_COLOR, dtype=np.uint8), axis=-1)
    # expected: boundary ring (mask minus its erosion), thickened by one 3x3 dilation
    boundary = mask.copy()
    boundary[6:14, 7:11] = False
    expected = np.zeros_like(mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            expected |= np.roll(np.roll(boundary, dy, axis=0), dx, axis=1)
    np.testing.assert_array_equal(green, expected)
    np.testing.assert_array_equal(contour_pixels(mask), expected)
    # interior and far background untouched
    assert not green[10, 9] and not green[0, 0]
    # no contour for an empty mask; a smaller mask is resized to the image
    empty = overlay_heatmap(img, np.zeros((20, 20)), 1.0, 2.0, mask=np.zeros((20, 20), bool))
    assert not np.all(empty == np.array(CONTOUR_COLOR), axis=-1).any()
    small = overlay_heatmap(img, np.zeros((20, 20)), 1.0, 2.0, mask=mask[::2, ::2])
    assert np.all(small == np.array(CONTOUR_COLOR), axis=-1).any()


def test_save_png_roundtrip(tmp_path: Path) -> None:
    arr = (np.arange(4 * 5 * 3) % 256).astype(np.uint8).reshape(4, 5, 3)
    p = save_png(arr, tmp_path / "sub" / "x.png")
    with Image.open(p) as im:
        np.testing.assert_array_equal(np.asarray(im), arr)


def test_svgs_parse_as_xml() -> None:
    fpr = np.array([0.0, 0.1, 0.5, 1.0])
    tpr = np.array([0.0, 0.6, 0.9, 1.0])
    roc = roc_svg(fpr, tpr, 0.87, "ROC <test> & co")
    root = ET.fromstring(roc)
    assert root.tag == f"{SVG}svg"
    texts = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "0.8700" in texts and "ROC <test> & co" in texts
    assert root.find(f"{SVG}polyline") is not None
    rng = np.random.default_rng(1)
    for normal, anomalous, thr in [
        (rng.normal(0, 1, 50), rng.normal(3, 1, 20), 1.5),
        ([], rng.normal(3, 1, 20), None),
        (rng.normal(0, 1, 50), [], 0.0),
        ([], [], 1.0),
        ([], [], None),
        ([2.0, 2.0], [2.0], 2.0),  # zero range
        ([np.nan, 1.0], [np.inf], float("nan")),
    ]:
        svg = histogram_svg(np.asarray(normal), np.asarray(anomalous), thr, "hist", bins=10)
        ET.fromstring(svg)
    svg = histogram_svg(rng.normal(0, 1, 50), rng.normal(3, 1, 20), 1.5, "h")
    assert "threshold = 1.5" in svg and "stroke-dasharray" in svg
    ET.fromstring(colorbar_svg(0.0, 1.0, 0.4))
    ET.fromstring(colorbar_svg(0.0, 1.0, 7.0))
    ET.fromstring(roc_svg(np.array([]), np.array([]), float("nan"), "empty"))


def _dataset(n: int, rng: np.random.Generator) -> dict:
    images = [rng.random((24, 24, 3), dtype=np.float32) for _ in range(n - 1)]
    images.append(rng.random((24, 24, 1), dtype=np.float32))  # one gray image
    maps = [rng.random((6, 6)).astype(np.float32) for _ in range(n)]
    masks: list[np.ndarray | None] = [None] * n
    m = np.zeros((24, 24), dtype=bool)
    m[4:10, 4:10] = True
    masks[0] = m
    return {
        "images": images,
        "maps": maps,
        "masks": masks,
        "names": [f"cls/<img {i}>.png" for i in range(n)],
        "scores": rng.random(n),
    }


def test_write_html_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 7
    d = _dataset(n, rng)
    labels = np.array([1, 0, 1, 0, 0, 1, 0])
    path = write_html_report(
        tmp_path / "rep",
        title="Test <report>",
        metrics={"image_auroc": 0.91, "pixel_auroc": 0.85, "pro": float("nan")},
        labels=labels,
        threshold=0.5,
        vmin=0.0,
        vmax=1.0,
        roc=(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.8, 1.0]), 0.91),
        extra={"method": "rd4ad", "colour scale": "[0, 1]"},
        **d,
    )
    assert path == tmp_path / "rep" / "report.html" and path.exists()
    html = path.read_text(encoding="utf-8")
    for key in ("image_auroc", "pixel_auroc", "pro", "rd4ad", "Test &lt;report&gt;"):
        assert key in html
    assert "<img 0>" not in html and "&lt;img 0&gt;" in html
    pngs = sorted((tmp_path / "rep" / "overlays").glob("*.png"))
    assert len(pngs) == n
    # side by side: image + overlay (with gap)
    with Image.open(pngs[0]) as im:
        assert im.size[0] > 2 * 24
    # cards sorted by score descending, each image embedded (the page stands alone)
    order = np.argsort(-d["scores"])
    positions = [html.index(f'<div class="name">#{i} ') for i in order]
    assert positions == sorted(positions)
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert len(srcs) == n and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert "needs its folder" not in html
    assert "Limited" not in html
    # linked instead of embedded: every referenced PNG exists and the page says it needs them
    linked = write_html_report(tmp_path / "linked", title="t", metrics={}, labels=labels,
                               threshold=0.5, vmin=0.0, vmax=1.0, embed_images=False, **d)
    html = linked.read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert len(srcs) == n and all((linked.parent / s).is_file() for s in srcs)
    assert "needs its folder" in html
    # over the size limit: linked too, and the page says why
    big = write_html_report(tmp_path / "big", title="t", metrics={}, labels=labels,
                            threshold=0.5, vmin=0.0, vmax=1.0, max_embedded_mb=1e-3, **d)
    html = big.read_text(encoding="utf-8")
    assert "needs its folder" in html and "larger than 0.001 MB" in html
    assert all(s.startswith("overlays/") for s in re.findall(r'<img src="([^"]*)"', html))


def test_write_html_report_unlabelled_no_maps_limited(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 6
    d = _dataset(n, rng)
    d["maps"] = None
    d["masks"] = None
    path = write_html_report(
        tmp_path,
        title="unlabelled",
        metrics={},
        labels=None,
        threshold=None,
        vmin=0.0,
        vmax=1.0,
        max_images=3,
        **d,
    )
    html = path.read_text(encoding="utf-8")
    pngs = list((tmp_path / "overlays").glob("*.png"))
    assert len(pngs) == 3
    assert "Limited" in html
    top = set(np.argsort(-d["scores"])[:3].tolist())
    assert {int(p.name.split("_")[0]) for p in pngs} == top
    with Image.open(pngs[0]) as im:
        assert im.size == (24, 24)  # just the image


def test_write_html_report_maps_without_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    d = _dataset(3, rng)
    d["masks"] = None
    path = write_html_report(
        tmp_path,
        title="t",
        metrics={"m": 1.0},
        labels=None,
        threshold=0.2,
        vmin=0.0,
        vmax=2.0,
        **d,
    )
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 3
    with pytest.raises(ValueError):
        write_html_report(
            tmp_path,
            title="t",
            metrics={},
            labels=np.zeros(2),
            threshold=None,
            vmin=0.0,
            vmax=1.0,
            **d,
        )
    assert path.exists()
