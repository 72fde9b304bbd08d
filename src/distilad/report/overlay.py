"""Heatmap colouring and overlays on a fixed colour scale.

Anomaly maps are coloured with a turbo-like colormap between a *fixed* ``vmin`` and ``vmax``
(taken from calibration, never from the image itself), so the same anomaly value has the same
colour in every image of a report. Ground-truth masks are drawn as a bright green contour.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

#: RGB colour of ground-truth contours.
CONTOUR_COLOR: tuple[int, int, int] = (0, 255, 0)

# Polynomial approximation of Google's "turbo" colormap (Mikhailov, 2019), coefficients for
# the powers x^0 .. x^5 of each channel.
_TURBO_COEFFS = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ],
    dtype=np.float64,
)


def _make_lut(n: int = 256) -> np.ndarray:
    """Turbo-like lookup table, shape (n, 3) uint8; entry 0 is ``vmin``, entry n-1 ``vmax``."""
    x = np.linspace(0.0, 1.0, n)
    powers = np.stack([x**k for k in range(6)], axis=1)  # (n, 6)
    rgb = np.clip(powers @ _TURBO_COEFFS.T, 0.0, 1.0)  # (n, 3)
    return np.round(rgb * 255.0).astype(np.uint8)


#: The colormap used everywhere in reports: (256, 3) uint8, low -> high.
LUT: np.ndarray = _make_lut()


def _scale_bounds(vmin: float, vmax: float) -> tuple[float, float]:
    """Validated (vmin, vmax) with vmax > vmin (a degenerate range is widened slightly)."""
    vmin, vmax = float(vmin), float(vmax)
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise ValueError(f"colour scale must be finite, got vmin={vmin}, vmax={vmax}")
    if vmax < vmin:
        raise ValueError(f"vmax ({vmax}) must be >= vmin ({vmin})")
    if vmax == vmin:
        vmax = vmin + max(abs(vmin) * 1e-6, 1e-12)
    return vmin, vmax


def colorize(amap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Colour an anomaly map on the fixed scale ``[vmin, vmax]``.

    Args:
        amap: (H, W) float anomaly map. Values are clipped to ``[vmin, vmax]``; NaN counts as
            ``vmin``.
        vmin: value mapped to the first (dark blue) colour.
        vmax: value mapped to the last (dark red) colour.

    Returns:
        (H, W, 3) uint8 RGB image. The colour of a value depends only on the value and on
        ``(vmin, vmax)``, never on the other values of the map.
    """
    a = np.asarray(amap, dtype=np.float64)
    if a.ndim != 2:
        a = np.squeeze(a)
        if a.ndim != 2:
            raise ValueError(f"expected an (H, W) anomaly map, got shape {np.shape(amap)}")
    lo, hi = _scale_bounds(vmin, vmax)
    a = np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo)
    t = (np.clip(a, lo, hi) - lo) / (hi - lo)
    idx = np.round(t * (len(LUT) - 1)).astype(np.intp)
    return LUT[idx]


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any image to (H, W, 3) uint8 RGB.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array; uint8 is taken as is, bool as
            0/1, other integer types are scaled by their maximum, floats must be in [0, 1]
            (they are clipped). Gray is repeated over three channels, alpha is dropped.

    Returns:
        (H, W, 3) uint8.
    """
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W[, C]) image with C in {{1, 3, 4}}, got {a.shape}")
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.dtype == np.uint8:
        out = a
    elif a.dtype == bool:
        out = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.integer):
        scale = 255.0 / float(np.iinfo(a.dtype).max)
        out = np.round(a.astype(np.float64) * scale).clip(0, 255).astype(np.uint8)
    else:
        f = np.nan_to_num(a.astype(np.float64), nan=0.0)
        out = np.round(np.clip(f, 0.0, 1.0) * 255.0).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def resize_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map with PIL.

    Args:
        amap: (h, w) float map.
        size: target (H, W).

    Returns:
        (H, W) float32 map (the input itself, as float32, when already that size).
    """
    a = np.asarray(amap, dtype=np.float32)
    if a.ndim != 2:
        a = np.squeeze(a)
    h, w = size
    if a.shape == (h, w):
        return a
    img = Image.fromarray(np.ascontiguousarray(a))
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask.

    Enlarging uses nearest neighbour. Shrinking marks every target pixel that any foreground
    pixel falls into (box filter, coverage > 0), so small defects do not vanish in thumbnails.

    Args:
        mask: (h, w) mask (anything non-zero is foreground).
        size: target (H, W).

    Returns:
        (H, W) bool mask.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        m = np.squeeze(m)
    m = m.astype(bool)
    h, w = size
    if m.shape == (h, w):
        return m
    if h >= m.shape[0] and w >= m.shape[1]:
        img = Image.fromarray(m.astype(np.uint8) * 255)
        return np.asarray(img.resize((w, h), Image.Resampling.NEAREST)) > 127
    img = Image.fromarray(m.astype(np.float32))
    return np.asarray(img.resize((w, h), Image.Resampling.BOX), dtype=np.float32) > 1e-6


def contour_pixels(mask: np.ndarray) -> np.ndarray:
    """Pixels drawn as the contour of a mask.

    The boundary is ``mask & ~binary_erosion(mask)`` (so a mask touching the image border has
    its boundary there), thickened by one binary dilation with a 3x3 square.

    Args:
        mask: (H, W) bool mask.

    Returns:
        (H, W) bool, True on contour pixels; all False for an empty mask.
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return np.zeros_like(m)
    boundary = m & ~ndimage.binary_erosion(m)
    return ndimage.binary_dilation(boundary, structure=np.ones((3, 3), dtype=bool))


def draw_contour(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Draw the contour of ``mask`` in :data:`CONTOUR_COLOR` on a copy of ``rgb``.

    Args:
        rgb: (H, W, 3) uint8 image.
        mask: (H', W') bool mask; resized (nearest) to (H, W) when different.

    Returns:
        (H, W, 3) uint8 copy of ``rgb`` with the contour drawn.
    """
    out = np.array(rgb, dtype=np.uint8, copy=True)
    m = resize_mask(mask, out.shape[:2])
    out[contour_pixels(m)] = CONTOUR_COLOR
    return out


def overlay_heatmap(
    image: np.ndarray,
    amap: np.ndarray,
    vmin: float,
    vmax: float,
    alpha: float = 0.5,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Blend a coloured anomaly map over an image, optionally with the ground-truth contour.

    Args:
        image: (H, W, C) float32 in [0, 1] with C in {1, 3} (gray is expanded to RGB), or
            uint8; (H, W) is accepted as gray.
        amap: (h, w) float anomaly map; resized bilinearly to (H, W) when different.
        vmin: fixed lower end of the colour scale (from calibration).
        vmax: fixed upper end of the colour scale (from calibration).
        alpha: weight of the heatmap in the blend, in [0, 1].
        mask: optional (H', W') bool ground-truth mask (resized nearest to (H, W) when
            different); its contour is drawn in bright green on top of the blend.

    Returns:
        (H, W, 3) uint8 ``(1 - alpha) * image + alpha * colorize(amap)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb_uint8(image)
    heat = colorize(resize_map(amap, rgb.shape[:2]), vmin, vmax)
    blend = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat.astype(np.float32)
    out = np.round(blend).clip(0, 255).astype(np.uint8)
    if mask is not None:
        out = draw_contour(out, mask)
    return out


def side_by_side(panels: list[np.ndarray], gap: int = 4, fill: int = 255) -> np.ndarray:
    """Concatenate images horizontally.

    Args:
        panels: (H_i, W_i, 3) uint8 images; shorter ones are padded at the bottom.
        gap: width in pixels of the separator between panels.
        fill: gray level of the separator and the padding.

    Returns:
        (max H_i, sum W_i + gap * (n - 1), 3) uint8.
    """
    if not panels:
        raise ValueError("no panels")
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    out = np.full((h, w, 3), fill, dtype=np.uint8)
    x = 0
    for p in panels:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return out


def save_png(array_uint8: np.ndarray, path: str | PathLike[str]) -> Path:
    """Write an image as PNG, creating parent folders.

    Args:
        array_uint8: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 array (other dtypes are
            converted with :func:`to_rgb_uint8`).
        path: destination file.

    Returns:
        The path written.
    """
    a = np.asarray(array_uint8)
    if a.dtype != np.uint8:
        a = to_rgb_uint8(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(a)).save(p, format="PNG")
    return p


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def colorbar_strip(width: int, vmin: float, vmax: float, threshold: float | None = None,
                   title: str = "anomaly map colour scale", height: int = 46) -> np.ndarray:
    """A horizontal colour bar as an image, for PNGs that must explain their own colours.

    Args:
        width: width in pixels (at least 120).
        vmin: value of the left end (first colour).
        vmax: value of the right end (last colour).
        threshold: marked with a black tick when inside ``[vmin, vmax]`` (its value is added to
            the caption).
        title: caption written above the bar.
        height: height in pixels.

    Returns:
        (height, width, 3) uint8 image on white: caption, gradient, end values, threshold tick.
    """
    width = max(int(width), 120)
    lo, hi = _scale_bounds(vmin, vmax)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(11)
    x0, x1, y0, y1 = 6, width - 6, 17, 29
    ramp = LUT[np.round(np.linspace(0, len(LUT) - 1, x1 - x0)).astype(np.intp)]
    img.paste(Image.fromarray(np.ascontiguousarray(np.repeat(ramp[None], y1 - y0, axis=0))),
              (x0, y0))
    draw.rectangle((x0 - 1, y0 - 1, x1, y1), outline=(60, 60, 60))
    if threshold is not None and np.isfinite(threshold) and lo <= threshold <= hi:
        x = x0 + (float(threshold) - lo) / (hi - lo) * (x1 - x0)
        draw.line((x, y0 - 2, x, y1 + 2), fill=(0, 0, 0), width=2)
        title = f"{title}; black tick: threshold {float(threshold):.3g}"
    draw.text((x0, 1), title, fill=(0, 0, 0), font=font)
    lo_text, hi_text = f"{lo:.3g}", f"{hi:.3g}"
    draw.text((x0, y1 + 3), lo_text, fill=(0, 0, 0), font=font)
    draw.text((x1 - draw.textlength(hi_text, font=font), y1 + 3), hi_text, fill=(0, 0, 0),
              font=font)
    return np.asarray(img)


def image_map_panel(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float,
                    threshold: float | None = None, mask: np.ndarray | None = None,
                    max_side: int | None = None, min_side: int = 192) -> np.ndarray:
    """The image, its heatmap overlay beside it, and the colour bar below both.

    Args:
        image: (H, W[, C]) image (see :func:`to_rgb_uint8`).
        amap: (h, w) anomaly map, resized to the (possibly resized) image.
        vmin: fixed lower end of the colour scale.
        vmax: fixed upper end of the colour scale.
        threshold: marked on the colour bar (map units, e.g. the image threshold of max pooling).
        mask: optional ground-truth mask, drawn as a green contour on the overlay.
        max_side: shrink the image so that its longer side is at most this (None: full size).
        min_side: enlarge (nearest neighbour, integer factor) an image whose longer side is
            shorter, so that small images and the colour bar's text stay readable.

    Returns:
        (H' + 46, 2 W' + 4, 3) uint8, where (H', W') is the image size after resizing.
    """
    rgb = shrink(to_rgb_uint8(image), max_side)
    factor = -(-min_side // max(rgb.shape[:2]))  # ceil
    if factor > 1:
        rgb = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    pair = side_by_side([rgb, overlay_heatmap(rgb, amap, vmin, vmax, mask=mask)])
    bar = colorbar_strip(pair.shape[1], vmin, vmax, threshold)
    out = np.full((pair.shape[0] + bar.shape[0], max(pair.shape[1], bar.shape[1]), 3), 255,
                  np.uint8)
    out[: pair.shape[0], : pair.shape[1]] = pair
    out[pair.shape[0]:, : bar.shape[1]] = bar
    return out


def shrink(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink (H, W, 3) uint8 so that its longer side is at most ``max_side`` (never enlarge)."""
    h, w = rgb.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
