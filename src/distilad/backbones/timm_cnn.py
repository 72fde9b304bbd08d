"""Other CNN teachers (resnet18, wide_resnet50_2 - the RD4AD paper's teacher - and any timm CNN).

Real ImageNet weights cannot be downloaded here, so they come from a local file the user supplies
(``weights=PATH``: a timm or torchvision state dict, .pth/.pt/.bin or .safetensors; torchvision and
timm use the same key names for ResNets). ``weights="random"`` gives random weights, for tests.
Taps: the three feature levels at strides 4, 8, 16 (ResNet layer1-3), ImageNet normalisation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distilad.backbones.base import Teacher, load_weights_into
from distilad.errors import DistiladError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TimmCNNTeacher(Teacher):
    """A timm CNN (``features_only``, stride-4/8/16 levels), frozen, weights from a local file."""

    def __init__(self, name: str, weights: str | Path | None = None):
        import timm

        if weights is None:
            raise DistiladError(
                f"teacher {name} needs ImageNet weights from a local file: weights=PATH "
                "(nothing is downloaded); efficientnet_lite0/1/2 work offline"
            )
        try:
            model = timm.create_model(name, pretrained=False, features_only=True,
                                      out_indices=(1, 2, 3))
        except RuntimeError as e:  # unknown model name
            raise DistiladError(f"unknown teacher {name!r}: {e}") from e
        wid = load_weights_into(model, weights, name, ("fc.", "classifier.", "head."))
        super().__init__(name, IMAGENET_MEAN, IMAGENET_STD, wid)
        self.model = model
        self.channels = tuple(model.feature_info.channels())
        self.strides = tuple(model.feature_info.reduction())
        self.freeze()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))
