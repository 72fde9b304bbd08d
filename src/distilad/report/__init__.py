"""Reports: heatmap overlays on a fixed colour scale, SVG plots and the HTML test report."""

from .html import safe_stem, write_html_report
from .overlay import colorize, image_map_panel, overlay_heatmap, save_png
from .staging import StagedFolder

__all__ = ["StagedFolder", "colorize", "image_map_panel", "overlay_heatmap", "safe_stem",
           "save_png", "write_html_report"]
