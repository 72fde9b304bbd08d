"""Frozen teachers by name: ``create_teacher("efficientnet_lite0")``."""

from __future__ import annotations

from pathlib import Path

from distilad.backbones.base import Teacher
from distilad.backbones.efficientnet_lite import EfficientNetLiteTeacher
from distilad.backbones.timm_cnn import TimmCNNTeacher

OFFLINE_TEACHERS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: the best of the three on MVTec AD bottle with RD (benchmarks/RESULTS.md, configs lite0/1/2-e20)
DEFAULT_TEACHER = "efficientnet_lite1"
WEIGHTS_FILE_TEACHERS = ("resnet18", "wide_resnet50_2")

__all__ = ["DEFAULT_TEACHER", "OFFLINE_TEACHERS", "Teacher", "WEIGHTS_FILE_TEACHERS", "create_teacher"]


def create_teacher(name: str, weights: str | Path | None = None) -> Teacher:
    """A frozen teacher. Lite0/1/2 use their packaged ImageNet weights unless ``weights`` is given;
    other timm CNNs need ``weights=PATH`` (or ``"random"`` for tests)."""
    if name in OFFLINE_TEACHERS:
        return EfficientNetLiteTeacher(name, weights)
    return TimmCNNTeacher(name, weights)
