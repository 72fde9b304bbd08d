"""Reports: heatmap overlays on a fixed colour scale, SVG plots and the HTML test report."""

from .html import write_html_report
from .overlay import colorize, overlay_heatmap, save_png

__all__ = ["colorize", "overlay_heatmap", "save_png", "write_html_report"]
