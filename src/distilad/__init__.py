"""distilad: anomaly and novelty detection by knowledge distillation."""

__version__ = "0.1.0"

from distilad.detector import (  # noqa: E402
    Detector,
    ScoreResult,
    create_detector,
    list_detectors,
    load_detector,
)
from distilad.errors import DistiladError  # noqa: E402

__all__ = [
    "Detector", "DistiladError", "ScoreResult", "create_detector", "list_detectors",
    "load_detector", "__version__",
]
